"""Benchmarks, the in-process demo, the capacity planner and the ``certstorm`` command line."""
