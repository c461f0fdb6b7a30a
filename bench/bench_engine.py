"""Authentication engine benchmarks, in-process, in units of one raw P-256 verify.

The floor for a device authentication is two raw verifies (its certificate's signature and its proof).
Device-side signing is never counted: a twin engine with the same secret, clock and random stream
predicts each challenge in the untimed setup, so the device can sign it before the timed call.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import statistics
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from certstorm.floor import FloorProbe
from devicekit.fleet import generate_fleet
from hubsim import AuthEngine, ChainPolicy, EnginePolicy, sign, verify_signature

ROUNDS = 300
_ECDSA = ec.ECDSA(hashes.SHA256())
NOW = 1_790_000_000.0  # inside the fleet's validity period


def _stream(seed: bytes):
    counter = itertools.count()

    def random(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return random


def _engine(fleet, seed: bytes, **chain_policy) -> AuthEngine:
    policy = EnginePolicy(chain=ChainPolicy(**chain_policy)) if chain_policy else None
    engine = AuthEngine(secret=b"s" * 32, clock=lambda: NOW, random=_stream(seed), policy=policy)
    company = fleet.custodian()
    record = engine.register_ca(company.certificate.public_bytes(Encoding.DER))
    engine.verify_ca(record.id, signature=company.sign_code(record.verification_code))
    return engine


_FLEETS: dict = {}


def _fleet(tmp_path_factory, depth: int = 2, alg: str = "p256"):
    """One small fleet per (depth, algorithm), shared by the module's benchmarks."""
    key = (depth, alg)
    if key not in _FLEETS:
        count = 40 if alg == "rsa2048" else 4 * ROUNDS + 10
        _FLEETS[key] = generate_fleet(
            tmp_path_factory.mktemp(f"fleet-{depth}-{alg}"), count, depth=depth, alg=alg, progress=False
        )
    return _FLEETS[key]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return _fleet(tmp_path_factory)


class SideBySideFloor:
    """Times the two-verify floor inside each round's setup, a moment before the timed call, so that a
    benchmark's ``floor_efficiency`` compares two things measured side by side even when the machine's
    speed drifts within seconds."""

    def __init__(self, setup):
        self._setup = setup
        self._probe = FloorProbe()
        self.floors: list[float] = []

    def setup(self):
        self.floors.append(self._probe.run(1))
        return self._setup()

    def record(self, benchmark) -> None:
        stats = getattr(benchmark, "stats", None)
        if stats is None or not self.floors:
            return
        floor = statistics.median(self.floors)
        benchmark.extra_info["floor_us"] = round(floor * 1e6, 2)
        benchmark.extra_info["floor_efficiency"] = round(floor / stats.stats.median, 4)


class Twins:
    """Two identical engines: ``shadow`` predicts the challenge ``engine`` will issue."""

    def __init__(self, fleet, **chain_policy):
        self.engine = _engine(fleet, b"twin", **chain_policy)
        self.shadow = _engine(fleet, b"twin", **chain_policy)
        self.fleet = fleet
        self.next = itertools.count()

    def warm_up(self):
        ident = self.fleet.identity(next(self.next))
        for eng in (self.engine, self.shadow):
            challenge = eng.begin(ident.chain_der())
            eng.complete(challenge.token, ident.sign(challenge.token))

    def setup(self):
        ident = self.fleet.identity(next(self.next))
        chain = ident.chain_der()
        challenge = self.shadow.begin(chain)
        proof = ident.sign(challenge.token)
        self.shadow.complete(challenge.token, proof)
        return (chain, challenge.token, proof), {}

    def reconnects(self, count: int):
        """Admit ``count`` devices on both engines, then hand them out again in turn (setup for a
        reconnect: the same device certificate, a fresh challenge)."""
        idents = [self.fleet.identity(next(self.next)) for _ in range(count)]
        for ident in idents:
            for eng in (self.engine, self.shadow):
                challenge = eng.begin(ident.chain_der())
                eng.complete(challenge.token, ident.sign(challenge.token))
        cycle = itertools.cycle(idents)

        def setup():
            ident = next(cycle)
            chain = ident.chain_der()
            challenge = self.shadow.begin(chain)
            proof = ident.sign(challenge.token)
            self.shadow.complete(challenge.token, proof)
            return (chain, challenge.token, proof), {}

        return setup

    def authenticate(self, chain, token, proof):
        issued = self.engine.begin(chain)
        assert issued.token == token, "twin engines diverged"
        return self.engine.complete(token, proof)


def test_calibration_raw_verify(benchmark, calibration):
    key = ec.generate_private_key(ec.SECP256R1())
    msg = os.urandom(300)
    sig = key.sign(msg, ec.ECDSA(hashes.SHA256()))
    pub = key.public_key()
    benchmark(pub.verify, sig, msg, ec.ECDSA(hashes.SHA256()))
    calibration.record(benchmark)


def test_calibration_raw_sign(benchmark, calibration):
    key = ec.generate_private_key(ec.SECP256R1())
    msg = os.urandom(300)
    benchmark(key.sign, msg, ec.ECDSA(hashes.SHA256()))
    calibration.record(benchmark)


def test_pop_verify(benchmark, calibration):
    key = ec.generate_private_key(ec.SECP256R1())
    token = os.urandom(330)
    proof = sign(key, token)
    benchmark(verify_signature, key.public_key(), proof, token)
    calibration.record(benchmark)


@pytest.mark.parametrize("path", ["warm", "cold"])
def test_in_process_authentication(benchmark, calibration, fleet, path):
    """One whole authentication (both steps), with its floor timed side by side."""
    twins = Twins(fleet, warm=(path == "warm"))
    twins.warm_up()
    floor = SideBySideFloor(twins.setup)
    result = benchmark.pedantic(twins.authenticate, setup=floor.setup, rounds=ROUNDS, iterations=1)
    assert result.first_connection
    calibration.record(benchmark)
    floor.record(benchmark)
    benchmark.extra_info["cache"] = twins.engine.stats()


def test_reconnect_authentication(benchmark, calibration, fleet):
    """A device that was admitted before authenticates again (the device cache), with its yardstick
    timed side by side in each round: one SHA-256 of the upload and one raw verify (the proof)."""
    twins = Twins(fleet)
    twins.warm_up()
    setup = twins.reconnects(ROUNDS)
    probe = FloorProbe()
    yardsticks: list[float] = []

    def timed_setup():
        args, kwargs = setup()
        upload = b"".join(args[0])
        start = time.perf_counter()
        hashlib.sha256(upload).digest()
        probe.public_key.verify(probe.signature, probe.message, _ECDSA)
        yardsticks.append(time.perf_counter() - start)
        return args, kwargs

    result = benchmark.pedantic(twins.authenticate, setup=timed_setup, rounds=ROUNDS, iterations=1)
    assert not result.first_connection
    assert twins.engine.stats()["reconnect"] == len(yardsticks)  # every timed call was a reconnect
    calibration.record(benchmark)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        yardstick = statistics.median(yardsticks)
        benchmark.extra_info["yardstick_us"] = round(yardstick * 1e6, 2)
        benchmark.extra_info["yardstick_efficiency"] = round(yardstick / stats.stats.median, 4)
    benchmark.extra_info["cache"] = twins.engine.stats()


def test_warm_chain_validation(benchmark, calibration, fleet):
    """Step 1 alone (chain through the cache, challenge sealed), for a new device under a cached issuer."""
    twins = Twins(fleet)
    twins.warm_up()
    idents = iter(range(1, 1 + 2 * ROUNDS))

    def setup():
        return (fleet.identity(next(idents)).chain_der(),), {}

    challenge = benchmark.pedantic(twins.engine.begin, setup=setup, rounds=ROUNDS, iterations=1)
    assert challenge.warm
    calibration.record(benchmark)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_cold_chain_validation(benchmark, calibration, tmp_path_factory, depth):
    """Step 1 through the full RFC 5280 verifier, by number of custodian intermediates."""
    fleet = _fleet(tmp_path_factory, depth=depth)
    engine = _engine(fleet, b"cold", warm=False)
    idents = iter(range(2 * ROUNDS))

    def setup():
        return (fleet.identity(next(idents)).chain_der(),), {}

    challenge = benchmark.pedantic(engine.begin, setup=setup, rounds=ROUNDS // 2, iterations=1)
    assert not challenge.warm
    calibration.record(benchmark)
    benchmark.extra_info["depth"] = depth


def test_challenge_seal_and_open(benchmark, calibration):
    """Sealing a challenge token and checking it again (what a proof at another process costs first)."""
    from hubsim import challenge as tokens

    token = tokens.Token(
        NOW + 30, os.urandom(16), os.urandom(32), (os.urandom(32),) * 3, "device-000001", os.urandom(91)
    )
    key = b"k" * 32

    def seal_and_open():
        return tokens.open_token(key, tokens.seal(key, token))

    assert benchmark(seal_and_open) == token
    calibration.record(benchmark)


def test_ca_registration_with_proof_of_possession(benchmark, calibration, fleet):
    """Register a CA and verify it with a verification certificate, as the API does."""
    company = fleet.custodian()
    der = company.certificate.public_bytes(Encoding.DER)

    def fresh():
        return AuthEngine(secret=b"s" * 32, clock=lambda: NOW, random=_stream(b"ca"))

    # Engines with the same random stream issue the same code, so one proof serves every round.
    proof = company.verification_certificate(fresh().register_ca(der).verification_code).public_bytes(Encoding.PEM)

    def setup():
        return (fresh(), proof), {}

    def register_and_prove(eng, proof):
        record = eng.register_ca(der)
        return eng.verify_ca(record.id, certificate=proof)

    record = benchmark.pedantic(register_and_prove, setup=setup, rounds=100, iterations=1)
    assert record.status == "verified"
    calibration.record(benchmark)


@pytest.mark.parametrize("alg", ["p256", "p384", "ed25519", "rsa2048"])
def test_algorithm_matrix(benchmark, calibration, tmp_path_factory, alg):
    """Warm in-process authentication per device algorithm (Ed25519 devices sit under a P-256 chain)."""
    fleet = _fleet(tmp_path_factory, alg=alg)
    twins = Twins(fleet)
    twins.warm_up()
    rounds = len(fleet) - 2 if alg == "rsa2048" else ROUNDS
    result = benchmark.pedantic(twins.authenticate, setup=twins.setup, rounds=rounds, iterations=1)
    assert result.first_connection
    calibration.record(benchmark)
    benchmark.extra_info["alg"] = alg


def test_irreducible_warm_steps(benchmark, calibration, fleet):
    """The least any warm authentication through this library must do, with no engine logic at all:
    hash the upload, parse the device certificate, check its signature with the cached issuer key,
    parse its public key, tag the challenge, check the proof. A yardstick between the two-verify floor
    and the engine's real cost."""
    from cryptography import x509

    issuer_key = fleet.issuer_certificate.public_key()
    ecdsa = ec.ECDSA(hashes.SHA256())
    idents = iter(range(1, 1 + 2 * ROUNDS))

    def setup():
        ident = fleet.identity(next(idents))
        token = os.urandom(330)
        return (ident.chain_der(), token, ident.sign(token)), {}

    def steps(chain, token, proof):
        for der in chain:
            hashlib.sha256(der).digest()
        cert = x509.load_der_x509_certificate(chain[0])
        issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, ecdsa)
        device_key = cert.public_key()
        hashlib.blake2b(token, key=b"k" * 32, digest_size=32).digest()
        device_key.verify(proof, token, ecdsa)

    floor = SideBySideFloor(setup)
    benchmark.pedantic(steps, setup=floor.setup, rounds=ROUNDS, iterations=1)
    calibration.record(benchmark)
    floor.record(benchmark)
