"""Benchmarks (timed outside the test suite; they print figures, tests never time anything)."""
