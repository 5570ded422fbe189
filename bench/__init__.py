"""Benchmarks (`make bench`): measured ratios against baselines run in the same process."""
