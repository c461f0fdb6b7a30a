"""Shared benchmark fixtures: the calibration verify every other figure is expressed in.

Each benchmark stores ``extra_info["verifies"]``: its median time divided by the median of one raw
ECDSA P-256 verify measured in the same session, so results from different machines compare.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

_ECDSA = ec.ECDSA(hashes.SHA256())


def raw_verify_seconds(samples: int = 9, batch: int = 300) -> float:
    """Median over ``samples`` batches of one raw P-256 verify with an already-parsed key."""
    key = ec.generate_private_key(ec.SECP256R1())
    pub, msg = key.public_key(), os.urandom(300)
    sig = key.sign(msg, _ECDSA)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            pub.verify(sig, msg, _ECDSA)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


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
