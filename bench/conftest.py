"""Shared benchmark fixtures: the calibration verify every other figure is expressed in.

Each benchmark stores ``extra_info["verifies"]``: its median time divided by the median of one raw
ECDSA P-256 verify measured in the same session, so results from different machines compare.
"""

from __future__ import annotations

import os

import pytest

from bench.measure import bench_cores, raw_verify_seconds
from certstorm.processes import HubProcess

CORES = bench_cores()  # read before any benchmark pins this process


class Calibration:
    """One raw verify on the benchmarks' core, measured again right after each benchmark, so that a
    benchmark's ratio uses a verify from a moment later rather than from the session's start (the
    session-start figure stands until the first benchmark ends)."""

    def __init__(self):
        self.verify = raw_verify_seconds()

    def record(self, benchmark, seconds: float | None = None, per: int = 1) -> None:
        """Store the benchmark's cost in calibration verifies (``per``: operations per timed call)."""
        fastest = None
        if seconds is None:
            stats = getattr(benchmark, "stats", None)
            if stats is None:  # --benchmark-disable: nothing was timed, record nothing
                return
            seconds, fastest = stats.stats.median, stats.stats.min
        self.verify = raw_verify_seconds()
        benchmark.extra_info["verify_us"] = round(self.verify * 1e6, 2)
        benchmark.extra_info["verifies"] = round(seconds / per / self.verify, 4)
        if fastest is not None:
            # The fastest round is the least disturbed by other work on a shared machine: regressions
            # are judged on it.
            benchmark.extra_info["verifies_min"] = round(fastest / per / self.verify, 4)


@pytest.fixture(autouse=True)
def _on_the_bench_core():
    """Each benchmark runs pinned to one core, the same one its calibration verifies run on: a process
    that migrates would compare a verify on one core with a benchmark on another. The pin is undone
    after each test, so nothing else in the session inherits it."""
    if CORES is None:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORES[1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


@pytest.fixture(scope="session")
def calibration():
    return Calibration()


@pytest.fixture(scope="module")
def pinned_hub(tmp_path_factory):
    """A one-worker hub on the first bench core (the benchmarks' client runs on the other), with a
    database of its own for the module."""
    proc = HubProcess(tmp_path_factory.mktemp("hub") / "hub.db", workers=1).start()
    if CORES is not None:  # the supervisor too: a worker it restarts inherits its core
        for pid in (proc.proc.pid, *proc.healthz()["workers"]):
            os.sched_setaffinity(pid, {CORES[0]})
    try:
        yield proc
    finally:
        proc.stop()
