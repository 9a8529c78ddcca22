"""Benchmarks: each script prints one JSON object with ``--json``."""
