"""Inference: the one ``Predictor``, test-time augmentation, Grad-CAM and model export."""
