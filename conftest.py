"""nbval compares the numbers of ``# NBVAL_CHECK_OUTPUT`` cells within a stated tolerance: tests/nbtolerance.py."""
pytest_plugins = ["tests.nbtolerance"]
