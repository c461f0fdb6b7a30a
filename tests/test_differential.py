"""Differential test: the warm path's verdict equals the full verifier's, whatever was seen first.

Each sample makes a fresh issuing CA, a valid device under it (V) and a device with one defect (D).
Three engines judge them: a reference that never uses the cache, engine A that sees V first (so D meets
a warm cache) and engine B that sees D first. D's verdict (accepted, or the exact error code) must be
the same in all three; so must V's in B and the reference.

CI runs ``CI_SAMPLES`` samples; ``make differential`` runs ``FULL_SAMPLES`` (marked slow).
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from chainkit import CA, CURRENT, FUTURE, NOW, PAST, der, engine, make_cert, new_key, trust
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from hubsim.algorithms import sign
from hubsim.chain import ChainPolicy
from hubsim.engine import EnginePolicy
from hubsim.errors import AuthError

CI_SAMPLES = 1200
FULL_SAMPLES = 6000


class World:
    """The long-lived part of the PKI; per-sample CAs hang below ``factory``."""

    def __init__(self):
        self.root = CA("Company-X")
        self.factory = CA("Factory-Y", parent=self.root, path_length=3)
        self.rsa_root = CA("Company-RSA", "rsa2048")
        self.p384_root = CA("Company-P384", "p384")
        self.unverified_root = CA("Company-Unverified")
        self.stranger_root = CA("Company-X")  # same name as the real one, never registered
        self.ref = engine(policy=EnginePolicy(chain=ChainPolicy(warm=False)))
        self.a, self.b = engine(), engine()
        for eng in (self.ref, self.a, self.b):
            for root in (self.root, self.rsa_root, self.p384_root):
                trust(eng, root)
            eng.register_ca(der(self.unverified_root.cert))


def chain_of(leaf: x509.Certificate, ca: CA, extra=()) -> list[bytes]:
    return [der(leaf)] + [der(c) for c in ca.chain()] + [der(c) for c in extra]


def leaf_under(ca: CA, n: int, alg="p256", **kwargs):
    key = new_key(alg)
    return key, make_cert(f"dev-{n}", key.public_key(), ca.cn, ca.key, ca=False, aki_key=ca.key.public_key(), **kwargs)


# Each defect class: (world, sample number, rng) -> (issuing CA, valid chain V, defective chain D, mutation)
def valid(w, n, rng):
    kind = rng.choice(["d0", "d1", "d2", "d3", "p384", "p521", "ed25519", "rsa", "san", "bare"])
    if kind == "d0":
        ca = w.root
    elif kind == "d1":
        ca = CA(f"Factory-{n}", parent=w.root, path_length=1)
    elif kind == "d3":
        ca = CA(f"Sub-{n}", parent=CA(f"Tech-{n}", parent=w.factory, path_length=1), path_length=0)
    elif kind == "p384":
        ca = CA(f"Tech-{n}", "p384", parent=w.p384_root, path_length=0)
    elif kind == "rsa":
        ca = CA(f"Tech-{n}", "rsa2048", parent=w.rsa_root, path_length=0)
    else:
        ca = CA(f"Tech-{n}", parent=w.factory, path_length=0)
    kwargs = {}
    if kind in ("ed25519", "p521"):
        kwargs["alg"] = kind
    if kind == "san":
        kwargs["extra"] = [(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:dev:{n}")]), False)]
    if kind == "bare":
        kwargs.update(key_usage=None, eku=None, ski=False, bc=False)
    return ca, kwargs, None


def _tech(w, n, **kwargs):
    return CA(f"Tech-{n}", parent=w.factory, path_length=0, **kwargs)


def leaf_defect(**defect):
    def make(w, n, rng):
        return _tech(w, n), defect, None
    return make


def issuer_name_mismatch(w, n, rng):
    ca = _tech(w, n)
    return ca, {"issuer_name": "Tech-Other"}, None


def bad_leaf_signature(w, n, rng):
    return _tech(w, n), {"signer": new_key()}, None


def unsupported_key(w, n, rng):
    choice = rng.choice(["secp256k1", "rsa1024", "ed448"])
    return _tech(w, n), {"alg": choice}, None


def odd_hash(w, n, rng):
    return _tech(w, n), {"digest": rng.choice([hashes.SHA384(), hashes.SHA512(), hashes.SHA224()])}, None


def odd_extensions(w, n, rng):
    kind = rng.choice(["unknown-critical", "unknown-noncritical", "ku-noncritical", "any-eku", "eku-critical",
                       "san-critical-empty"])
    unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    defect = {
        "unknown-critical": {"extra": [(unknown, True)]},
        "unknown-noncritical": {"extra": [(unknown, False)]},
        "ku-noncritical": {"key_usage": None, "extra": [(x509.KeyUsage(True, False, False, False, False, False, False,
                                                                       False, False), False)]},
        "any-eku": {"eku": [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]},
        "eku-critical": {"eku": None, "extra": [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)]},
        "san-critical-empty": {"extra": [(x509.SubjectAlternativeName([x509.DNSName("d.example")]), True)]},
    }[kind]
    return _tech(w, n), defect, None


def expired_intermediate(w, n, rng):
    return _tech(w, n, validity=(NOW - dt.timedelta(days=90), NOW - dt.timedelta(seconds=1))), {}, None


def future_intermediate(w, n, rng):
    return _tech(w, n, validity=FUTURE), {"validity": FUTURE}, None


def bad_intermediate_signature(w, n, rng):
    ca = _tech(w, n)
    key = new_key()
    ca.cert = make_cert(ca.cn, ca.key.public_key(), w.factory.cn, key, ca=True, path_length=0)
    return ca, {}, None


def intermediate_not_ca(w, n, rng):
    ca = _tech(w, n)
    ca.cert = make_cert(ca.cn, ca.key.public_key(), w.factory.cn, w.factory.key, ca=False,
                        key_usage=("key_cert_sign", "digital_signature"), eku=None)
    return ca, {}, None


def path_length_exceeded(w, n, rng):
    top = CA(f"Tech-{n}", parent=w.factory, path_length=0)
    return CA(f"Sub-{n}", parent=top, path_length=0), {}, None


def unregistered_root(w, n, rng):
    return CA(f"Tech-{n}", parent=CA("Factory-Y", parent=w.stranger_root, path_length=1), path_length=0), {}, None


def unverified_ca(w, n, rng):
    return CA(f"Tech-{n}", parent=w.unverified_root, path_length=0), {}, None


def revoked_intermediate(w, n, rng):
    ca = _tech(w, n)
    return ca, {}, ca.cert.fingerprint(hashes.SHA256()).hex()


def chain_too_long(w, n, rng):
    ca = w.root
    for level in range(7):
        ca = CA(f"L{level}-{n}", parent=ca, path_length=None)
    return ca, {}, None


def duplicates(w, n, rng):
    return _tech(w, n), {"duplicate": True}, None


def same_subject(w, n, rng):
    return _tech(w, n), {"same_subject": True}, None


CLASSES = {
    "valid": valid,
    "expired_leaf": leaf_defect(validity=PAST),
    "not_yet_valid_leaf": leaf_defect(validity=FUTURE),
    "expired_intermediate": expired_intermediate,
    "not_yet_valid_intermediate": future_intermediate,
    "issuer_name_mismatch": issuer_name_mismatch,
    "bad_leaf_signature": bad_leaf_signature,
    "bad_intermediate_signature": bad_intermediate_signature,
    "intermediate_not_ca": intermediate_not_ca,
    "path_length_exceeded": path_length_exceeded,
    "leaf_is_ca": leaf_defect(ca_leaf=True),
    "unregistered_root": unregistered_root,
    "unverified_ca": unverified_ca,
    "revoked_intermediate": revoked_intermediate,
    "wrong_key_usage": leaf_defect(key_usage=("key_encipherment",)),
    "wrong_eku": leaf_defect(eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
    "unsupported_key": unsupported_key,
    "odd_hash": odd_hash,
    "odd_extensions": odd_extensions,
    "chain_too_long": chain_too_long,
    "duplicates": duplicates,
    "same_subject": same_subject,
}


def build(ca: CA, n: int, defect: dict) -> tuple[list[bytes], object]:
    defect = dict(defect)
    alg = defect.pop("alg", "p256")
    signer = defect.pop("signer", ca.key)
    issuer_name = defect.pop("issuer_name", ca.cn)
    dup = defect.pop("duplicate", False)
    same = defect.pop("same_subject", False)
    ca_leaf = defect.pop("ca_leaf", False)
    key = _key(alg)
    leaf = make_cert(f"dev-{n}-{alg}", key.public_key(), issuer_name, signer, ca=ca_leaf,
                     aki_key=ca.key.public_key(), **defect)
    chain = [der(leaf)] + [der(c) for c in ca.chain()]
    if dup:
        chain = chain + chain[1:] + chain[:1]
    if same and len(chain) > 1:
        twin = make_cert(ca.cn, new_key().public_key(), ca.cert.issuer, new_key(), ca=True)
        chain = chain + [der(twin)]
    return chain, key


def _key(alg):
    if alg == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if alg == "p521":
        return ec.generate_private_key(ec.SECP521R1())
    return new_key(alg)


def verdict(eng, chain, key) -> str:
    try:
        challenge = eng.begin(chain)
        eng.complete(challenge.token, sign(key, challenge.token))
        return "ok"
    except AuthError as exc:
        return exc.code


def run(samples: int, seed: int = 5280) -> dict:
    rng = random.Random(seed)
    w = World()
    names = sorted(CLASSES)
    seen: dict[str, set[str]] = {name: set() for name in names}
    mismatches = []
    for n in range(samples):
        name = names[n % len(names)]
        ca, defect, revoke = CLASSES[name](w, n, rng)
        valid_chain, valid_key = build(ca, n, {})
        bad_chain, bad_key = build(ca, n + samples, defect)
        a_valid = verdict(w.a, valid_chain, valid_key)          # A: valid first, warms the cache
        if revoke:
            for eng in (w.ref, w.a, w.b):
                eng.revoke(revoke)
        ref_bad = verdict(w.ref, bad_chain, bad_key)
        a_bad = verdict(w.a, bad_chain, bad_key)
        b_bad = verdict(w.b, bad_chain, bad_key)                # B: defect first
        b_valid = verdict(w.b, valid_chain, valid_key)
        ref_valid = verdict(w.ref, valid_chain, valid_key)
        seen[name].add(ref_bad)
        if not (ref_bad == a_bad == b_bad) or b_valid != ref_valid or (not revoke and a_valid != ref_valid):
            mismatches.append((n, name, defect, ref_bad, a_bad, b_bad, ref_valid, a_valid, b_valid))
    consulted = sum(e.stats()["warm"] + e.stats()["deferred"] for e in (w.a, w.b))
    return {"mismatches": mismatches, "seen": seen, "warm_consulted": consulted}


def _check(result, samples):
    assert result["mismatches"] == [], result["mismatches"][:5]
    seen = result["seen"]
    assert seen["valid"] == {"ok"}
    refused_classes = [n for n in seen if n not in ("valid", "duplicates", "odd_hash", "odd_extensions")]
    for name in refused_classes:
        assert "ok" not in seen[name], (name, seen[name])
    assert len(seen) >= 15
    # The warm path really judged: a cached issuer was found and it admitted or declined the device.
    assert result["warm_consulted"] > samples // 2


def test_warm_and_cold_agree():
    result = run(CI_SAMPLES)
    _check(result, CI_SAMPLES)


@pytest.mark.slow
def test_warm_and_cold_agree_full():
    result = run(FULL_SAMPLES, seed=6979)
    _check(result, FULL_SAMPLES)
    print({name: sorted(codes) for name, codes in result["seen"].items()})
