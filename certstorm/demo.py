"""The in-process demo: the whole authentication story with no network, measured against the crypto floor.

Makes the supply chain and a fleet, registers Company-X's CA and proves possession of its key, then
authenticates every device through the engine (challenge, the device's own signature, proof) and
reports what the hub side cost, as a multiple of two raw P-256 verifies measured in the same run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.serialization import Encoding

from certstorm.fleet import add_chain_arguments
from certstorm.floor import FloorProbe
from devicekit.fleet import Fleet, generate_fleet
from hubsim import AuthEngine, ChainPolicy, EnginePolicy
from hubsim.argtypes import integer


@dataclass
class DemoResult:
    devices: int
    depth: int
    alg: str
    fleet_seconds: float
    warm_us: float  # hub work per warm authentication (device signing excluded)
    cold_us: float  # hub work per authentication with the issuer cache disabled
    floor_us: float  # two raw P-256 verifies
    warm_efficiency: float  # floor / warm
    cold_in_verifies: float  # cold cost / one raw verify
    admitted: int
    first_connections: int
    reconnects_admitted: int
    warm_count: int
    cold_count: int


def _engine(**policy) -> AuthEngine:
    return AuthEngine(
        secret=os.urandom(32),
        clock=time.time,
        random=os.urandom,
        policy=EnginePolicy(chain=ChainPolicy(**policy)) if policy else None,
    )


def _register(engine: AuthEngine, fleet: Fleet, say) -> None:
    company = fleet.custodian()
    record = engine.register_ca(company.certificate.public_bytes(Encoding.PEM))
    say(
        f"registered CA {record.subject} ({record.id[:16]}…): {record.status}, "
        f"verification code {record.verification_code[:16]}…"
    )
    proof = company.verification_certificate(record.verification_code)
    record = engine.verify_ca(record.id, certificate=proof.public_bytes(Encoding.PEM))
    say(f"proved possession with a certificate whose CN is the code: {record.status}")


def _pass(engine: AuthEngine, identities) -> tuple[float, int, int]:
    """(hub seconds, admitted, first connections); the devices' signing time is excluded."""
    clock = time.perf_counter
    hub = 0.0
    admitted = first = 0
    for ident in identities:
        chain = ident.chain_der()
        t0 = clock()
        challenge = engine.begin(chain)
        t1 = clock()
        proof = ident.sign(challenge.token)
        t2 = clock()
        result = engine.complete(challenge.token, proof)
        hub += (t1 - t0) + (clock() - t2)
        admitted += 1
        first += result.first_connection
    return hub, admitted, first


def run_demo(devices: int = 3000, depth: int = 2, alg: str = "p256", rounds: int = 5, say=print) -> DemoResult:
    with tempfile.TemporaryDirectory(prefix="certstorm-demo-") as tmp:
        t = time.perf_counter()
        say(f"making the supply chain (depth {depth}) and {devices} {alg} devices, each with its own key…")
        fleet = generate_fleet(tmp, devices, depth=depth, alg=alg, progress=sys.stderr.isatty())
        fleet_seconds = time.perf_counter() - t
        say(
            f"fleet ready in {fleet_seconds:.1f} s: {fleet.ca_certificate.subject.rfc4514_string()} → "
            + " → ".join(c.subject.rfc4514_string() for c in reversed(fleet.intermediates))
            + " → devices"
        )
        identities = [fleet.identity(i) for i in range(devices)]

        engine = _engine()
        _register(engine, fleet, say)
        floor = FloorProbe()
        # Warm: every device once, in rounds interleaved with the floor so both see the same machine.
        per_round = max(1, devices // rounds)
        warm_s, admitted, first, floor_s = 0.0, 0, 0, 0.0
        for r in range(rounds):
            batch = identities[r * per_round : (r + 1) * per_round if r < rounds - 1 else devices]
            s, a, f = _pass(engine, batch)
            warm_s += s
            admitted += a
            first += f
            floor_s += floor.run(len(batch))
        stats = engine.stats()
        say(
            f"authenticated {admitted} devices ({first} first connections): "
            f"{stats['warm']} through the issuer cache, {stats['cold']} through the full verifier"
        )
        _, again, again_first = _pass(engine, identities[: min(devices, 500)])
        say(f"reconnected {again} of them: {again_first} counted as first connections")

        cold_engine = _engine(warm=False)
        _register(cold_engine, fleet, lambda *_: None)
        sample = identities[: min(devices, 600)]
        cold_s, _, _ = _pass(cold_engine, sample)
        cold_floor = floor.run(len(sample))

    warm_us = warm_s / admitted * 1e6
    floor_us = floor_s / admitted * 1e6
    cold_us = cold_s / len(sample) * 1e6
    result = DemoResult(
        devices,
        depth,
        alg,
        fleet_seconds,
        warm_us,
        cold_us,
        floor_us,
        floor_us / warm_us,
        cold_us / (cold_floor / len(sample) * 1e6 / 2),
        admitted,
        first,
        again,
        stats["warm"],
        stats["cold"],
    )
    say("")
    say(f"hub work per warm authentication: {warm_us:.0f} µs → {1e6 / warm_us:,.0f} authentications/s per core")
    say(
        f"crypto floor (two raw P-256 verifies, same run): {floor_us:.0f} µs → warm path at "
        f"{result.warm_efficiency:.0%} of the floor"
    )
    say(
        f"full verifier every time (cache off): {cold_us:.0f} µs per authentication = "
        f"{result.cold_in_verifies:.1f} raw verifies"
    )
    return result


def demo_command(args) -> int:
    result = run_demo(args.devices, args.depth, args.alg)
    if args.json:
        import json

        print(json.dumps(asdict(result), indent=2))
    return 0 if result.admitted == result.devices else 1


def add_demo_arguments(parser) -> None:
    parser.add_argument(
        "--devices", type=integer(1), default=3000, metavar="N", help="fleet size, at least 1 (default 3000)"
    )
    add_chain_arguments(parser)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")


__all__ = ["DemoResult", "add_demo_arguments", "demo_command", "run_demo"]
