"""Training: config, tf.data input, cached frozen features, staged fine-tuning, the trainer."""
