"""Benchmarks run by `make bench` (never timed assertions in unit tests)."""
