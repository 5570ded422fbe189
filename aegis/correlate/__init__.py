"""Correlation: the normalized stream → AI incident signals (detections as data, state in the store)."""
