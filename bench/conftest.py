"""Shared benchmark fixtures: the calibration verify every other figure is expressed in.

Each benchmark stores ``extra_info["verifies"]``: its median time divided by the median of one raw
ECDSA P-256 verify measured in the same session, so results from different machines compare.
"""

from __future__ import annotations

import pytest

from bench.measure import raw_verify_seconds


class Calibration:
    """Measured at session start and again at the end; the figure used is the mean of both medians."""

    def __init__(self):
        self.start = raw_verify_seconds()
        self.end = None

    @property
    def verify(self) -> float:
        return self.start if self.end is None else (self.start + self.end) / 2

    def record(self, benchmark, seconds: float | None = None, per: int = 1) -> None:
        """Store the benchmark's cost in calibration verifies (``per``: operations per timed call)."""
        fastest = None
        if seconds is None:
            stats = getattr(benchmark, "stats", None)
            if stats is None:  # --benchmark-disable: nothing was timed, record nothing
                return
            seconds, fastest = stats.stats.median, stats.stats.min
        benchmark.extra_info["verify_us"] = round(self.verify * 1e6, 2)
        benchmark.extra_info["verifies"] = round(seconds / per / self.verify, 4)
        if fastest is not None:
            # The fastest round is the least disturbed by other work on a shared machine: regressions
            # are judged on it.
            benchmark.extra_info["verifies_min"] = round(fastest / per / self.verify, 4)


@pytest.fixture(scope="session")
def calibration():
    cal = Calibration()
    yield cal
    cal.end = raw_verify_seconds()
