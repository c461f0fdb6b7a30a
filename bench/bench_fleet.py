"""Fleet generation cost against its floor: one P-256 keygen plus one ECDSA signature.

Run with::

    .venv/bin/python -m pytest bench/bench_fleet.py --benchmark-only -p no:cacheprovider \\
        -o python_files='bench_*.py'

``test_fleet_per_device`` times :meth:`RecordMaker.records` (the code path every ``generate_fleet`` worker
runs) over 2,000 devices per round, and measures the floor in the same rounds -- in its setup step, which
pytest-benchmark does not time -- so both see the same machine state. ``benchmark.extra_info`` records
``floor_us``, ``per_device_us`` and ``efficiency = floor / per-device`` (target >= 0.85), each from the
fastest round.
"""

from __future__ import annotations

import os
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devicekit.fleet import RecordMaker, Template, new_fleet_id
from devicekit.pki import SupplyChain

CURVE = ec.SECP256R1()
ECDSA = ec.ECDSA(hashes.SHA256())
DEVICES = 2000
ROUNDS = 7


def _floor_op(key, data):
    ec.generate_private_key(CURVE)
    key.sign(data, ECDSA)


def _floor_batch(n: int) -> float:
    """Seconds per (keygen + sign of 300 bytes), over ``n`` operations."""
    key, data = ec.generate_private_key(CURVE), os.urandom(300)
    gen, sign = ec.generate_private_key, key.sign
    started = time.perf_counter()
    for _ in range(n):
        gen(CURVE)
        sign(data, ECDSA)
    return (time.perf_counter() - started) / n


def _maker(seed):
    chain = SupplyChain.build(2, "p256", seed=seed)
    width = 7
    template = Template.build(chain.issuer, "p256", new_fleet_id(seed), "device-", width)
    return RecordMaker(chain.issuer, "p256", template, width, seed)


def test_keygen_sign_floor(benchmark, calibration):
    key, data = ec.generate_private_key(CURVE), os.urandom(300)
    benchmark(_floor_op, key, data)
    calibration.record(benchmark)


@pytest.mark.parametrize("seeded", [False, True], ids=["random", "seeded"])
def test_fleet_per_device(benchmark, calibration, seeded):
    maker = _maker(b"bench" if seeded else None)
    floors: list[float] = []

    def setup():
        floors.append(_floor_batch(DEVICES))

    benchmark.pedantic(maker.records, args=(0, DEVICES), setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: the code ran once, nothing was timed
        return
    calibration.record(benchmark, per=DEVICES)
    benchmark.extra_info["operations_per_round"] = DEVICES
    per_device = benchmark.stats.stats.min / DEVICES
    floor = min(floors)
    benchmark.extra_info.update(
        devices_per_round=DEVICES,
        floor_us=round(floor * 1e6, 2),
        per_device_us=round(per_device * 1e6, 2),
        efficiency=round(floor / per_device, 3),
        target=0.85,
        seeded=seeded,
    )
    print(
        f"\n{'seeded' if seeded else 'random'}: floor {floor * 1e6:.1f} us, per device "
        f"{per_device * 1e6:.1f} us, efficiency {floor / per_device:.3f}"
    )
