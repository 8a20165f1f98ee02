"""Datasets: sources, splits, the snapshot format and the collect step."""
