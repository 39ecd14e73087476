"""Data: dataset layouts, the manifest, patient-grouped splits, pre-resizing, tf.data."""
