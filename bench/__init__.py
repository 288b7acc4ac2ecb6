"""Benchmarks: every figure is a ratio against raw redis-py measured in the same run."""
