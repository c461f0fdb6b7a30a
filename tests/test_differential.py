"""Differential: the cached paths give exactly the full verifier's verdict, error code included.

Every case in ``mutations.cases()`` is one change to a valid device upload, made at the DER level by the
test itself (no fleet template). Each is judged by

* the reference: a fresh engine that never caches (every chain through the full verifier);
* the primed engine: one engine for the whole module, primed with a pool of diverse valid siblings
  (P-256, P-384, Ed25519 and RSA keys, with and without SAN, other extension sets, under Technician-Z,
  its same-subject twin and other issuers), that sees each case twice;
* the first-sight engine: a fresh engine that sees the case before anything else, then the siblings,
  then the case again.

All verdicts must equal the reference's, which must equal the case's stated expectation. Cases whose
upload holds only cached certificates must be *judged* by the warm path on every sight (admitted
through a cache, or looked at and handed on); the others (a mutated intermediate) must be handed on.
"""

from __future__ import annotations

import os

import chainkit as ck
import mutations as M
import pytest
from cryptography.hazmat.primitives import hashes
from hostile import der as D
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CASES = M.cases()


@pytest.fixture(scope="module")
def world():
    return M.World()


@pytest.fixture(scope="module")
def primed(world):
    return world.engine(warm=True, primed=True)


def _judged(stats: dict) -> int:
    return stats["warm"] + stats["reconnect"] + stats["deferred"]


def test_the_corpus_is_broad():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert len(names) >= 150, len(names)
    expectations = {c.expect for c in CASES}
    assert "ok" in expectations and len(expectations) >= 10, expectations


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_warm_paths_agree_with_the_full_verifier(world, primed, case):
    upload, key = case.make(world)
    reference = world.engine(warm=False, primed=False)
    first_sight = world.engine(warm=True, primed=False)
    judge = primed
    if case.revoke is not None:
        judge = world.engine(warm=True, primed=True)  # revocation would spoil the shared engine
        fp = case.revoke(world, upload)
        for eng in (reference, first_sight, judge):
            eng.revoke(fp)

    expected = M.verdict(reference, upload, key)
    assert expected == case.expect, f"the full verifier says {expected}, the case expects {case.expect}"

    assert M.verdict(first_sight, upload, key) == expected, "first sight, empty cache"
    for sibling_key, sibling in world.siblings:
        M.verdict(first_sight, sibling, sibling_key)
    assert M.verdict(first_sight, upload, key) == expected, "after the siblings"

    for sight in ("first", "second"):
        before = judge.stats()
        got = M.verdict(judge, upload, key)
        after = judge.stats()
        assert got == expected, f"{sight} sight on the primed engine"
        delta = {k: after[k] - before[k] for k in ("warm", "reconnect", "deferred", "unknown", "cold")}
        if delta["cold"] == 0 and delta["warm"] == delta["reconnect"] == 0:
            # Refused before either path (the upload parser, or a revoked device certificate): the
            # reference must not have reached the chain validator either.
            assert expected in PRE_CACHE_REFUSALS and reference.stats()["cold"] == 0, (sight, delta)
        elif case.warm:
            assert delta["warm"] + delta["reconnect"] + delta["deferred"] == 1, f"{sight} sight: {delta}"
        elif sight == "first" or expected != "ok":
            assert delta["unknown"] == 1 and delta["warm"] == delta["reconnect"] == 0, f"{sight} sight: {delta}"
        if expected == "ok" and sight == "second" and case.exact:
            assert delta["reconnect"] == 1, "a re-admitted device must hit the device cache"


PRE_CACHE_REFUSALS = {"malformed_input", "private_key_in_upload", "cert_revoked"}


def test_every_warm_judged_ok_case_is_admitted_without_the_full_verifier(world):
    """Cases whose upload is exactly a cached path are admitted warm, not by the verifier."""
    eng = world.engine(warm=True, primed=True)
    plain = [
        c for c in CASES if c.warm and c.expect == "ok" and c.revoke is None and not c.name.startswith("chain-extra")
    ]
    assert len(plain) >= 40
    for case in plain:
        upload, key = case.make(world)
        before = eng.stats()
        assert M.verdict(eng, upload, key) == "ok", case.name
        after = eng.stats()
        assert after["verifier"] == before["verifier"], f"{case.name} reached the full verifier"


# ---------------------------------------------------------------- randomised mutation (Hypothesis)

EXAMPLES = int(os.environ.get("CERTSTORM_DIFFERENTIAL_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def base(world):
    key, cert = world.tech.issue(
        "random-base",
        extra=[(M.x509.SubjectAlternativeName([M.x509.DNSName("random-base.devices.example.com")]), False)],
    )
    return key, D.TBS.of(cert).encode()


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["set", "insert", "delete"]), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    )
)
def test_random_tbs_mutations_agree(world, primed, base, edits):
    key, tbs = base
    body = bytearray(tbs)
    for pos, op, value in edits:
        pos %= len(body)
        if op == "set":
            body[pos] = value
        elif op == "insert":
            body.insert(pos, value)
        else:
            del body[pos]
    identifier, signer = D.ALGORITHMS["ecdsa-sha256"]
    leaf = D.seq(bytes(body), identifier, D.bits(signer(world.tech.key, bytes(body))))
    upload = [leaf, ck.der(world.tech.cert), ck.der(world.factory.cert)]
    reference = M.verdict(world.engine(warm=False, primed=False), upload, key)
    assert M.verdict(primed, upload, key) == reference
    assert M.verdict(primed, upload, key) == reference


# ---------------------------------------------------------------- fleets of other shapes take the warm path


@pytest.mark.parametrize("shape", ["san-dns", "san-uri", "mixed-keys", "twin-technicians"])
def test_fleets_of_other_shapes_are_admitted_warm_after_first_sight(world, shape):
    eng = world.engine(warm=True, primed=False)
    devices = []
    algs = ["p256", "p384", "ed25519", "rsa2048"]
    for i in range(12):
        ca, alg, extra = world.tech, "p256", []
        if shape == "san-dns":
            extra = [(M.x509.SubjectAlternativeName([M.x509.DNSName(f"d{i}.fleet.example.com")]), False)]
        elif shape == "san-uri":
            extra = [(M.x509.SubjectAlternativeName([M.x509.UniformResourceIdentifier(f"urn:dev:{i}")]), False)]
        elif shape == "mixed-keys":
            alg = algs[i % len(algs)]
        else:
            ca = world.tech if i % 2 else world.tech_twin
        key, cert = ca.issue(f"{shape}-{i}", alg, extra=extra)
        devices.append((key, M.chain(cert, ca)))
    firsts = {}
    for key, upload in devices:
        before = eng.stats()
        assert M.verdict(eng, upload, key) == "ok"
        firsts.setdefault(upload[1], eng.stats()["cold"] - before["cold"])
    stats = eng.stats()
    issuers = len(firsts)
    assert stats["cold"] == issuers, stats  # one cold validation per issuer, the rest warm
    assert stats["warm"] == len(devices) - issuers, stats
    for key, upload in devices:
        assert M.verdict(eng, upload, key) == "ok"
    assert eng.stats()["reconnect"] == len(devices)


def test_fingerprints_are_of_the_der(world):
    assert M._fp(world.tech.cert) == world.tech.cert.fingerprint(hashes.SHA256()).hex()
