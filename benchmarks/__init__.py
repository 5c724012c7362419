"""Benchmarks for queuectl: `python -m benchmarks [NAME...]` (see README.md here). Every target is a ratio to a baseline
measured in the same run, or a latency bound; none is a timed assertion in a test."""
