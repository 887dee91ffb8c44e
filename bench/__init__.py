"""Benchmarks that run backhaul side by side with its peers (not part of the test suite)."""
