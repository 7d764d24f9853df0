"""Benchmarks. The database ones run against `prep_bench`, filled by `python -m bench.generate_volume`."""
