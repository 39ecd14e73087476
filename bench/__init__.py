"""Benchmarks: ``python -m bench`` regenerates docs/BENCHMARKS.md (see bench/__main__.py)."""
