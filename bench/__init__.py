"""Benchmarks of the Contacts API: `uv run python -m bench` (see bench/README.md)."""
