"""The pytest-benchmark suites with their measurement helpers and the regression gate; not installed."""
