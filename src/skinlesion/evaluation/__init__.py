"""Evaluation: metrics as pure functions, plots that take ``ax=None``, the HTML report."""
