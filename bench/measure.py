"""Benchmark measurement helpers: one raw P-256 verify (the unit every benchmark is expressed in), measured
on a chosen core, and the cores a benchmark and the hub under test run on."""

from __future__ import annotations

import os
import statistics
import time

from cryptography.hazmat.primitives.asymmetric import ec

from certstorm.floor import ECDSA_P256

__all__ = ["bench_cores", "raw_verify_on_core", "raw_verify_seconds"]


def raw_verify_seconds(samples: int = 9, batch: int = 300) -> float:
    """Median over ``samples`` batches of one raw P-256 verify with an already-parsed key."""
    key = ec.generate_private_key(ec.SECP256R1())
    pub, msg = key.public_key(), os.urandom(300)
    sig = key.sign(msg, ECDSA_P256)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            pub.verify(sig, msg, ECDSA_P256)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def bench_cores() -> tuple[int, int] | None:
    """Where this process may run on two or more cores: the first of them for a hub under test, the last
    for the benchmark itself (the cores of a shared VM need not be equally fast, so a benchmark and its
    calibration run on the same one). None on one core or where affinity cannot be set."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[-1]) if len(allowed) >= 2 else None


def raw_verify_on_core(core: int | None) -> float:
    """One raw verify measured on ``core`` (a server's, while it is idle): the two cores of a shared VM
    need not be equally fast, so a server's CPU is compared with verifies on the core it ran on."""
    if core is None:
        return raw_verify_seconds()
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return raw_verify_seconds()
    finally:
        os.sched_setaffinity(0, old)
