"""Reliability and security tests (issue 8): the bad-input corpus, crashes, numerics, load."""
