"""Benchmarks: scripts, run as files (`.venv/bin/python bench/throughput.py`, see bench/README.md),
that import the modules beside them by their names. The tests import `bench.nemo_models` (the one
builder of the NeMo models), which imports nothing else from here."""
