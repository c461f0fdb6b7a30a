"""In-process measurements shared by the demo, the benchmarks and the report.

Every figure is a ratio to the crypto floor measured in the same run, interleaved with it round by
round, because these machines are shared and noisy: an absolute time from one moment means little,
a ratio of two things measured side by side means a lot.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from hubsim.engine import AuthEngine
from loadgen._pki import SupplyChain

_ECDSA = ec.ECDSA(hashes.SHA256())
_PEM = Encoding.PEM


class FloorProbe:
    """Two raw P-256 verifies with already-parsed keys: the least any device authentication can cost
    the hub (one check of the device certificate's signature, one of the proof)."""

    def __init__(self):
        key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = key.public_key()
        self.message = os.urandom(300)
        self.signature = key.sign(self.message, _ECDSA)

    def run(self, n: int) -> float:
        """Seconds for ``n`` floors (2n verifies)."""
        verify, sig, msg = self.public_key.verify, self.signature, self.message
        start = time.perf_counter()
        for _ in range(n):
            verify(sig, msg, _ECDSA)
            verify(sig, msg, _ECDSA)
        return time.perf_counter() - start


def trusted_engine(chain: SupplyChain, **kwargs) -> AuthEngine:
    """An engine with ``chain``'s Company-X CA registered and proven, the way the hub API does it."""
    engine = AuthEngine(secret=os.urandom(32), clock=time.time, random=os.urandom, **kwargs)
    record = engine.register_ca(chain.company.certificate.public_bytes(_PEM))
    engine.verify_ca(record.id, certificate=chain.company.verification_certificate(record.verification_code)
                     .public_bytes(_PEM))
    return engine


def authenticate_timed(engine: AuthEngine, devices) -> tuple[float, int]:
    """Authenticate each (signer, chain) once; returns (hub seconds, count). The device's own signing
    is done between the two steps and not counted."""
    hub = 0.0
    clock = time.perf_counter
    for signer, chain in devices:
        t0 = clock()
        challenge = engine.begin(chain)
        t1 = clock()
        proof = signer(challenge.token)
        t2 = clock()
        engine.complete(challenge.token, proof)
        hub += (t1 - t0) + (clock() - t2)
    return hub, len(devices)


@dataclass
class Ratio:
    per_auth_us: float      # median over rounds
    floor_us: float         # two raw verifies, median over rounds
    efficiency: float       # floor / per-auth (1.0 = as cheap as the floor)
    rounds: int

    def line(self, label: str) -> str:
        return (f"{label}: {self.per_auth_us:.1f} µs per authentication vs floor {self.floor_us:.1f} µs "
                f"(two raw P-256 verifies) -> {self.efficiency:.1%} of the floor over {self.rounds} rounds")


def compare_with_floor(make_batch, run_batch, rounds: int = 7, floor: FloorProbe | None = None) -> Ratio:
    """Interleave floor and workload round by round and report medians and the median ratio."""
    floor = floor or FloorProbe()
    per, base, ratios = [], [], []
    for _ in range(rounds):
        batch = make_batch()
        seconds, count = run_batch(batch)
        f = floor.run(count) / count
        w = seconds / count
        per.append(w)
        base.append(f)
        ratios.append(f / w)
    return Ratio(statistics.median(per) * 1e6, statistics.median(base) * 1e6, statistics.median(ratios), rounds)


def device_batch(chain: SupplyChain, count: int, start: int = 0):
    """``count`` fresh devices (own key, own certificate) as (signer, chain DER list) pairs."""
    out = []
    for i in range(start, start + count):
        dev = chain.device(f"bench-{i:08d}")
        out.append((dev.sign, dev.chain_der()))
    return out
