"""The import benchmark: `python -m bench.run --help`."""
