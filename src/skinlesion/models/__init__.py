"""Models: the backbone registry, in-graph preprocessing and the classifier builder."""
