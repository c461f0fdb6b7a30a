"""Shared benchmark fixtures: the calibration verify every other figure is expressed in.

Each benchmark stores ``extra_info["verifies"]``: its median time divided by the median of one raw
ECDSA P-256 verify measured in the same session, so results from different machines compare.
"""

from __future__ import annotations

import os

import pytest

from bench.measure import raw_verify_seconds


class Calibration:
    """One raw verify, measured again right after each benchmark, so every ratio compares two things
    measured side by side; the session-start figure stands until the first benchmark ends. The
    session runs pinned to one core (when there are two or more): the cores of a shared VM need not be
    equally fast, and a process that migrates would compare a verify on one with a benchmark on another."""

    def __init__(self):
        self.start = raw_verify_seconds()
        self.latest = self.start

    @property
    def verify(self) -> float:
        return self.latest

    def record(self, benchmark, seconds: float | None = None, per: int = 1) -> None:
        """Store the benchmark's cost in calibration verifies (``per``: operations per timed call)."""
        fastest = None
        if seconds is None:
            stats = getattr(benchmark, "stats", None)
            if stats is None:  # --benchmark-disable: nothing was timed, record nothing
                return
            seconds, fastest = stats.stats.median, stats.stats.min
        self.latest = raw_verify_seconds()
        benchmark.extra_info["verify_us"] = round(self.verify * 1e6, 2)
        benchmark.extra_info["verifies"] = round(seconds / per / self.verify, 4)
        if fastest is not None:
            # The fastest round is the least disturbed by other work on a shared machine: regressions
            # are judged on it.
            benchmark.extra_info["verifies_min"] = round(fastest / per / self.verify, 4)


BENCH_CORE = 1  # bench_hub.py pins the hub to core 0 and keeps its client here


@pytest.fixture(scope="session")
def calibration():
    pin = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    old = os.sched_getaffinity(0) if pin else None
    if pin:
        os.sched_setaffinity(0, {BENCH_CORE})
    try:
        yield Calibration()
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
