"""Benchmarks (``make bench``): figures printed and written to data/bench/, not asserted."""
