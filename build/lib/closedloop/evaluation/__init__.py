"""Judging a model: metrics, paired statistics, slices, drift and error analysis."""
