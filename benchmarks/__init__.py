"""Benchmarks that measure modelrollout's decisions; run them as modules (python -m benchmarks.decisions)."""
