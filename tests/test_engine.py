"""The authentication engine, refusals first. No sockets, no real clock: the h11 way."""

from __future__ import annotations

import datetime as dt

import pytest
from chainkit import (
    CA,
    CURRENT,
    FUTURE,
    NOW,
    PAST,
    FakeClock,
    authenticate,
    der,
    engine,
    make_cert,
    new_key,
    openssl_sha1,
    pem,
    trust,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from hubsim import CODES, AuthError, ChainPolicy, EnginePolicy, sign
from hubsim import challenge as tokens


def refused(code, fn, *args, **kwargs):
    with pytest.raises(AuthError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


@pytest.fixture
def pki():
    root = CA("Company-X")
    factory = CA("Factory-Y", parent=root, path_length=1)
    tech = CA("Technician-Z", parent=factory, path_length=0)
    return root, factory, tech


@pytest.fixture(params=["empty-cache", "sibling-accepted"])
def hub(request, pki):
    """Every test runs twice: on an empty cache, and after valid siblings were accepted under the same
    issuers (Technician-Z, Factory-Y and Company-X itself), so that a refusal cannot depend on the cache."""
    eng = engine()
    trust(eng, pki[0])
    if request.param == "sibling-accepted":
        root, factory, tech = pki
        for ca in (tech, factory, root):
            key, cert = ca.issue(f"sibling-under-{ca.cn}")
            authenticate(eng, key, [der(cert)] + [der(c) for c in ca.chain()])
    return eng


def device(tech, device_id="dev-1", **kwargs):
    key, cert = tech.issue(device_id, **kwargs)
    return key, [der(cert)] + [der(c) for c in tech.chain()]


# ---------------------------------------------------------------- CA registration refusals


def _private_key_encodings():
    ec_key, rsa_key = new_key("p256"), new_key("rsa2048")
    S = serialization
    out = {}
    for label, key in (("ec", ec_key), ("rsa", rsa_key)):
        for fmt_name, fmt in (("pkcs8", S.PrivateFormat.PKCS8), ("traditional", S.PrivateFormat.TraditionalOpenSSL)):
            for enc_name, enc in (("pem", S.Encoding.PEM), ("der", S.Encoding.DER)):
                out[f"{label}-{fmt_name}-{enc_name}"] = key.private_bytes(enc, fmt, S.NoEncryption())
        out[f"{label}-pkcs8-encrypted-pem"] = key.private_bytes(
            S.Encoding.PEM, S.PrivateFormat.PKCS8, S.BestAvailableEncryption(b"pw")
        )
        out[f"{label}-pkcs8-encrypted-der"] = key.private_bytes(
            S.Encoding.DER, S.PrivateFormat.PKCS8, S.BestAvailableEncryption(b"pw")
        )
    out["ec-openssh"] = ec_key.private_bytes(S.Encoding.PEM, S.PrivateFormat.OpenSSH, S.NoEncryption())
    root = CA("Company-X")
    out["pkcs12-plain"] = pkcs12.serialize_key_and_certificates(b"x", root.key, root.cert, None, S.NoEncryption())
    out["pkcs12-password"] = pkcs12.serialize_key_and_certificates(
        b"x", root.key, root.cert, None, S.BestAvailableEncryption(b"pw")
    )
    out["cert-then-key-pem"] = pem(root.cert) + root.key.private_bytes(
        S.Encoding.PEM, S.PrivateFormat.PKCS8, S.NoEncryption()
    )
    return out


PRIVATE_KEYS = _private_key_encodings()


@pytest.mark.parametrize("kind", sorted(PRIVATE_KEYS))
def test_ca_upload_with_private_key_is_refused_and_not_kept(kind):
    eng = engine()
    err = refused("private_key_in_upload", eng.register_ca, PRIVATE_KEYS[kind])
    assert eng.list_cas() == []
    assert b"PRIVATE" not in str(err).encode() and "MII" not in str(err)


@pytest.mark.parametrize("kind", ["ec-pkcs8-der", "rsa-traditional-pem", "ec-traditional-der", "pkcs12-password"])
def test_device_upload_with_private_key_is_refused(hub, kind):
    refused("private_key_in_upload", hub.begin, PRIVATE_KEYS[kind])


def test_device_certificate_is_not_a_ca(pki):
    _, cert = pki[2].issue("dev-1")
    refused("not_a_ca", engine().register_ca, der(cert))


def test_ca_without_keycertsign_is_refused():
    key = new_key()
    cert = make_cert("X", key.public_key(), "X", key, ca=True, key_usage=("digital_signature",))
    refused("not_a_ca", engine().register_ca, der(cert))


def test_ca_without_key_usage_is_refused():
    key = new_key()
    cert = make_cert("X", key.public_key(), "X", key, ca=True, key_usage=None)
    refused("not_a_ca", engine().register_ca, der(cert))


def test_certificate_with_invalid_version_is_malformed():
    cert = bytearray(der(CA("X").cert))
    i = cert.index(b"\xa0\x03\x02\x01\x02")
    cert[i + 4] = 7  # version v8
    refused("malformed_input", engine().register_ca, bytes(cert))


def test_ca_without_basic_constraints_is_refused():
    key = new_key()
    cert = make_cert("X", key.public_key(), "X", key, ca=True, bc=False, key_usage=("key_cert_sign",))
    refused("not_a_ca", engine().register_ca, der(cert))


@pytest.mark.parametrize("validity,code", [(PAST, "cert_expired"), (FUTURE, "cert_not_yet_valid")])
def test_ca_outside_validity_is_refused(validity, code):
    refused(code, engine().register_ca, der(CA("X", validity=validity).cert))


@pytest.mark.parametrize("alg", ["secp256k1", "rsa1024", "ed25519"])
def test_ca_with_unsupported_key_is_refused(alg):
    refused("unsupported_algorithm", engine().register_ca, der(CA("X", alg).cert))


def test_ca_signed_with_sha1_is_refused(tmp_path):
    cert, _ = openssl_sha1(None, "X", ca=True, tmp_path=tmp_path)
    refused("unsupported_algorithm", engine().register_ca, der(cert))


@pytest.mark.parametrize(
    "body,code",
    [
        (b"", "malformed_input"),
        (b"not a certificate", "malformed_input"),
        (b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", "malformed_input"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "malformed_input"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "malformed_input"),
        (b"\x30" * 20000, "upload_too_large"),
    ],
)
def test_malformed_or_oversized_ca_upload_is_refused(body, code):
    refused(code, engine().register_ca, body)


def test_truncated_der_is_refused():
    refused("malformed_input", engine().register_ca, der(CA("X").cert)[:-10])


def test_two_certificates_where_one_is_expected_are_refused(pki):
    refused("too_many_certificates", engine().register_ca, pem(pki[0].cert, pki[1].cert))


def test_duplicate_ca_is_refused(pki):
    eng = engine()
    eng.register_ca(der(pki[0].cert))
    refused("ca_exists", eng.register_ca, pem(pki[0].cert))


# ---------------------------------------------------------------- proof of possession refusals


def test_verification_code_is_fresh_and_long(pki):
    eng = engine()
    a = eng.register_ca(der(pki[0].cert)).verification_code
    b = eng.register_ca(der(CA("Other").cert)).verification_code
    assert a != b and len(a) == 64 and int(a, 16) >= 0  # 256 bits


def verification_cert(ca: CA, code: str, signer=None, validity=CURRENT):
    signer = signer or ca.key
    return make_cert(code, new_key().public_key(), ca.cn, signer, ca=False, eku=None, validity=validity)


def test_verification_certificate_with_wrong_code_is_refused(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    refused("verification_code_mismatch", eng.verify_ca, rec.id, certificate=pem(verification_cert(pki[0], "0" * 64)))
    assert eng.get_ca(rec.id).status == "unverified"


def test_verification_certificate_not_signed_by_ca_is_refused(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    forged = verification_cert(pki[0], rec.verification_code, signer=new_key())
    refused("verification_signature_invalid", eng.verify_ca, rec.id, certificate=pem(forged))
    assert eng.get_ca(rec.id).status == "unverified"


def test_registering_a_ca_whose_key_the_uploader_lacks_cannot_be_verified(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    refused(
        "verification_signature_invalid",
        eng.verify_ca,
        rec.id,
        signature=sign(new_key(), rec.verification_code.encode()),
    )
    refused("verification_signature_invalid", eng.verify_ca, rec.id, signature=b"\x00" * 70)


def test_expired_verification_certificate_is_refused(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    old = verification_cert(pki[0], rec.verification_code, validity=PAST)
    refused("cert_expired", eng.verify_ca, rec.id, certificate=pem(old))


def test_expired_verification_code_is_refused(pki):
    clock = FakeClock()
    eng = engine(clock)
    rec = eng.register_ca(der(pki[0].cert))
    code = rec.verification_code
    clock.t += EnginePolicy().verification_code_ttl + 1
    refused("verification_code_expired", eng.verify_ca, rec.id, signature=sign(pki[0].key, code.encode()))
    fresh = eng.new_verification_code(rec.id).verification_code
    assert fresh != code
    eng.verify_ca(rec.id, signature=sign(pki[0].key, fresh.encode()))


def test_verification_code_is_single_use(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    proof = pem(verification_cert(pki[0], rec.verification_code))
    assert eng.verify_ca(rec.id, certificate=proof).status == "verified"
    refused("ca_already_verified", eng.verify_ca, rec.id, certificate=proof)
    refused("ca_already_verified", eng.new_verification_code, rec.id)


def test_verify_needs_exactly_one_proof_and_a_known_ca(pki):
    eng = engine()
    rec = eng.register_ca(der(pki[0].cert))
    refused("malformed_input", eng.verify_ca, rec.id)
    refused("ca_not_found", eng.verify_ca, "ab" * 32, signature=b"x")


def test_unverified_ca_is_not_a_trust_anchor(pki):
    eng = engine()
    eng.register_ca(der(pki[0].cert))
    refused("chain_untrusted", eng.begin, device(pki[2])[1])


# ---------------------------------------------------------------- device chain refusals


def test_unregistered_root_is_refused(hub):
    other = CA("Technician-Z", parent=CA("Company-X"))
    refused("chain_untrusted", hub.begin, device(other)[1])


@pytest.mark.parametrize(
    "kwargs,code",
    [
        ({"validity": PAST}, "cert_expired"),
        ({"validity": FUTURE}, "cert_not_yet_valid"),
        ({"key_usage": ("key_encipherment",)}, "key_usage_invalid"),
        ({"eku": [ExtendedKeyUsageOID.SERVER_AUTH]}, "eku_invalid"),
        ({"alg": "secp256k1"}, "unsupported_algorithm"),
        ({"alg": "rsa1024"}, "unsupported_algorithm"),
    ],
)
def test_bad_device_certificates_are_refused(hub, pki, kwargs, code):
    refused(code, hub.begin, device(pki[2], **kwargs)[1])


def test_sha1_device_certificate_is_refused(hub, pki, tmp_path):
    cert, _ = openssl_sha1(pki[2], "dev-sha1", ca=False, tmp_path=tmp_path)
    refused("unsupported_algorithm", hub.begin, [der(cert)] + [der(c) for c in pki[2].chain()])


def test_device_certificate_that_is_a_ca_is_refused(hub, pki):
    tech = pki[2]
    key = new_key()
    cert = make_cert("dev-ca", key.public_key(), tech.cn, tech.key, ca=True)
    refused("leaf_is_ca", hub.begin, [der(cert)] + [der(c) for c in tech.chain()])


def test_device_certificate_without_common_name_is_refused(hub, pki):
    tech = pki[2]
    key = new_key()
    cert = make_cert(
        x509.Name([]),
        key.public_key(),
        tech.cn,
        tech.key,
        ca=False,
        extra=[(x509.SubjectAlternativeName([x509.DNSName("dev.example")]), True)],
    )
    refused("device_id_missing", hub.begin, [der(cert)] + [der(c) for c in tech.chain()])


def test_self_signed_device_certificate_is_refused(hub):
    key = new_key()
    cert = make_cert("dev-1", key.public_key(), "dev-1", key, ca=False)
    refused("chain_untrusted", hub.begin, [der(cert)])


def test_intermediate_that_is_not_a_ca_is_refused(hub, pki):
    _root, factory, _ = pki
    key = new_key()
    fake = make_cert(
        "Fake-Z", key.public_key(), factory.cn, factory.key, ca=False, key_usage=("key_cert_sign",), eku=None
    )
    dkey = new_key()
    leaf = make_cert("dev-1", dkey.public_key(), "Fake-Z", key, ca=False)
    refused("chain_untrusted", hub.begin, [der(leaf), der(fake), der(factory.cert)])


def test_expired_intermediate_is_refused(hub, pki):
    tech = CA(
        "Technician-Old",
        parent=pki[1],
        path_length=0,
        validity=(NOW - dt.timedelta(days=90), NOW - dt.timedelta(days=1)),
    )
    refused("cert_expired", hub.begin, device(tech)[1])


def test_path_length_exceeded_is_refused(hub, pki):
    below = CA("Sub-Technician", parent=pki[2], path_length=0)  # Technician-Z has pathLen 0
    refused("chain_untrusted", hub.begin, device(below)[1])


def test_missing_intermediate_is_refused(hub, pki):
    _key, chain = device(pki[2])
    refused("chain_untrusted", hub.begin, chain[:1])


def test_bad_leaf_signature_is_refused(hub, pki):
    tech = pki[2]
    key = new_key()
    forged = make_cert("dev-1", key.public_key(), tech.cn, new_key(), ca=False)
    refused("chain_untrusted", hub.begin, [der(forged)] + [der(c) for c in tech.chain()])


def test_too_many_certificates_are_refused_before_parsing_them_all(hub, pki):
    root = pki[0]
    cas = [CA(f"Layer-{i}", parent=root) for i in range(ChainPolicy().max_certificates + 1)]
    _key, cert = cas[0].issue("dev-1")
    refused("too_many_certificates", hub.begin, [der(cert)] + [der(c.cert) for c in cas])


def test_oversized_chain_is_refused(hub):
    refused("upload_too_large", hub.begin, b"-" * (ChainPolicy().max_upload_bytes + 1))


def test_pathological_same_subject_chain_is_refused_before_the_verifier(hub, pki):
    # Many intermediates sharing one subject and key make path building explode; the engine must refuse
    # before cryptography's verifier ever sees them.
    key = new_key()
    inters = [make_cert("Loop", key.public_key(), "Loop", key, ca=True) for _ in range(6)]
    dkey = new_key()
    leaf = make_cert("dev-1", dkey.public_key(), "Loop", key, ca=False)
    calls_before = hub.stats()["verifier"]
    refused("chain_ambiguous", hub.begin, [der(leaf)] + [der(c) for c in inters])
    assert hub.stats()["verifier"] == calls_before


def test_duplicates_are_dropped_not_refused(hub, pki):
    key, chain = device(pki[2])
    assert authenticate(hub, key, chain + chain[1:]).device_id == "dev-1"


# ---------------------------------------------------------------- challenge and proof refusals


def test_tampered_challenge_is_refused(hub, pki):
    key, chain = device(pki[2])
    token = bytearray(hub.begin(chain).token)
    token[20] ^= 1
    refused("challenge_invalid", hub.complete, bytes(token), sign(key, bytes(token)))
    refused("challenge_invalid", hub.complete, b"short", b"sig")


def test_challenge_from_another_hub_is_refused(pki):
    a, b = engine(), engine()
    b._secret = b"z" * 32  # a hub with another secret
    for eng in (a, b):
        trust(eng, pki[0])
    key, chain = device(pki[2])
    token = b.begin(chain).token
    refused("challenge_invalid", a.complete, token, sign(key, token))


def test_expired_challenge_is_refused(pki):
    clock = FakeClock()
    eng = engine(clock)
    trust(eng, pki[0])
    key, chain = device(pki[2])
    token = eng.begin(chain).token
    clock.t += EnginePolicy().challenge_ttl + 1
    refused("challenge_expired", eng.complete, token, sign(key, token))


def test_proof_by_another_key_is_refused(hub, pki):
    _, chain = device(pki[2])
    token = hub.begin(chain).token
    refused("pop_invalid", hub.complete, token, sign(new_key(), token))
    refused("pop_invalid", hub.complete, token, b"\x30\x00")


def test_challenge_issued_for_another_certificate_is_refused(hub, pki):
    key_a, _chain_a = device(pki[2], "dev-a")
    _key_b, chain_b = device(pki[2], "dev-b")
    token_b = hub.begin(chain_b).token
    refused("pop_invalid", hub.complete, token_b, sign(key_a, token_b))


def test_replayed_proof_is_refused(hub, pki):
    key, chain = device(pki[2])
    token = hub.begin(chain).token
    proof = sign(key, token)
    hub.complete(token, proof)
    refused("challenge_used", hub.complete, token, proof)


def test_replay_to_another_process_is_refused(pki):
    # Two engines stand for two hub processes: shared secret and shared replay guard, nothing else.
    guard = tokens.MemoryReplayGuard()
    a, b = engine(replay_guard=guard), engine(replay_guard=guard)
    for eng in (a, b):
        trust(eng, pki[0])
    key, chain = device(pki[2])
    token = a.begin(chain).token
    proof = sign(key, token)
    assert b.complete(token, proof).device_id == "dev-1"  # answered at the other process
    refused("challenge_used", a.complete, token, proof)


def test_replay_guard_is_bounded_and_fails_closed():
    guard = tokens.MemoryReplayGuard(max_entries=2)
    assert guard.claim(b"a", 10, 0) and guard.claim(b"b", 10, 0)
    refused("throttled", guard.claim, b"c", 10, 0)
    assert guard.claim(b"c", 30, 11)  # the first two expired and left
    assert len(guard) == 1


# ---------------------------------------------------------------- revocation, removal, disable


def test_revoked_intermediate_is_refused_on_the_very_next_request(hub, pki):
    key, chain = device(pki[2], "dev-1")
    authenticate(hub, key, chain)
    _key2, chain2 = device(pki[2], "dev-2")
    assert hub.begin(chain2).warm
    hub.revoke(x509.load_der_x509_certificate(chain[1]).fingerprint(hashes.SHA256()).hex())
    refused("cert_revoked", hub.begin, chain2)
    refused("cert_revoked", authenticate, hub, key, chain)


def test_revocation_between_challenge_and_proof_is_enforced(hub, pki):
    key, chain = device(pki[2])
    token = hub.begin(chain).token
    hub.revoke(pki[1].cert.fingerprint(hashes.SHA256()).hex())
    refused("cert_revoked", hub.complete, token, sign(key, token))


def test_revoked_device_certificate_is_refused(hub, pki):
    key, chain = device(pki[2])
    authenticate(hub, key, chain)
    hub.revoke(x509.load_der_x509_certificate(chain[0]).fingerprint(hashes.SHA256()).hex())
    refused("cert_revoked", hub.begin, chain)


def test_revoked_root_is_refused(hub, pki):
    key, chain = device(pki[2])
    authenticate(hub, key, chain)
    hub.revoke(pki[0].cert.fingerprint(hashes.SHA256()).hex())
    refused("cert_revoked", hub.begin, device(pki[2], "dev-2")[1])


def test_revocation_needs_a_fingerprint(hub):
    refused("revocation_not_found", hub.revoke, "abc")
    refused("revocation_not_found", hub.revoke, "zz" * 32)


def test_removed_ca_is_refused_on_the_very_next_request(hub, pki):
    key, chain = device(pki[2])
    authenticate(hub, key, chain)
    hub.remove_ca(hub.list_cas()[0].id)
    refused("chain_untrusted", hub.begin, chain)
    refused("ca_not_found", hub.remove_ca, "00" * 32)


def test_ca_removed_between_challenge_and_proof_is_enforced(hub, pki):
    key, chain = device(pki[2])
    token = hub.begin(chain).token
    hub.remove_ca(hub.list_cas()[0].id)
    refused("chain_untrusted", hub.complete, token, sign(key, token))


def test_disabled_device_is_refused(hub, pki):
    key, chain = device(pki[2])
    token = hub.begin(chain).token
    hub.disable_device("dev-1")
    refused("device_disabled", hub.complete, token, sign(key, token))
    refused("device_disabled", hub.begin, chain)
    hub.disable_device("dev-1", False)
    assert authenticate(hub, key, chain).device_id == "dev-1"


def test_cached_path_expires_with_its_earliest_certificate(pki):
    clock = FakeClock()
    eng = engine(clock)
    trust(eng, pki[0])
    short = CA(
        "Technician-S", parent=pki[1], path_length=0, validity=(NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=2))
    )
    key, chain = device(short, validity=(NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=300)))
    authenticate(eng, key, chain)
    assert eng.begin(device(short, "dev-2", validity=CURRENT)[1]).warm
    clock.t += 3 * 86400
    refused("cert_expired", eng.begin, device(short, "dev-3", validity=(NOW, NOW + dt.timedelta(days=300)))[1])


def test_cache_is_bounded(pki):
    eng = engine(policy=EnginePolicy(chain=ChainPolicy(cache_size=3)))
    trust(eng, pki[0])
    for i in range(6):
        tech = CA(f"Technician-{i}", parent=pki[1], path_length=0)
        authenticate(eng, *device(tech, f"dev-{i}"))
    assert eng.stats()["cache_size"] <= 3


# ---------------------------------------------------------------- what must work


def test_every_error_code_is_documented():
    for code, (status, text) in CODES.items():
        # 5xx: the service's own failure, or (DPS) a linked hub that could not take a device
        assert (400 <= status < 500 or code in ("internal_error", "hub_unavailable")) and text
    with pytest.raises(ValueError):
        AuthError("no_such_code")


def test_device_admitted_once_then_warm(hub, pki, request):
    key, chain = device(pki[2])
    first = hub.begin(chain)
    assert first.warm == request.node.callspec.params["hub"].startswith("sibling")  # issuer cached or not
    admitted = hub.complete(first.token, sign(key, first.token))
    assert admitted.device_id == "dev-1" and admitted.first_connection
    assert admitted.ca == hub.list_cas()[0].id
    reconnects = hub.stats()["reconnect"]
    again = hub.begin(pem(*[x509.load_der_x509_certificate(c) for c in chain]))
    assert again.warm and hub.stats()["reconnect"] == reconnects + 1  # the device cache, PEM or DER alike
    assert not hub.complete(again.token, sign(key, again.token)).first_connection
    _key2, chain2 = device(pki[2], "dev-2")
    assert hub.begin(chain2).warm


@pytest.mark.parametrize("alg", ["p256", "p384", "ed25519", "rsa2048"])
def test_device_key_algorithms(hub, pki, alg):
    key, chain = device(pki[2], alg=alg)
    assert authenticate(hub, key, chain).device_id == "dev-1"


def test_openssl_style_device_without_san_aki_ku_or_eku(hub, pki):
    tech = pki[2]
    key = new_key()
    cert = make_cert(
        "dev-tutorial", key.public_key(), tech.cn, tech.key, ca=False, key_usage=None, eku=None, ski=False, bc=False
    )
    assert authenticate(hub, key, [der(cert)] + [der(c) for c in tech.chain()]).device_id == "dev-tutorial"


def test_device_directly_under_the_registered_ca(hub, pki):
    key, cert = pki[0].issue("dev-0")
    assert authenticate(hub, key, [der(cert)]).device_id == "dev-0"
    key, cert = pki[0].issue("dev-00")
    assert hub.begin([der(cert)]).warm


def test_purchased_ca_signed_by_an_outside_root(pki):
    public_root = CA("Public-Root")
    company = CA("Company-X", parent=public_root)
    tech = CA("Technician-Z", parent=company, path_length=0)
    eng = engine()
    trust(eng, company)
    key, cert = tech.issue("dev-1")
    assert authenticate(eng, key, [der(cert), der(tech.cert)]).device_id == "dev-1"


def test_every_error_code_is_in_the_docs():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "errors.md").read_text()
    missing = [code for code in CODES if f"`{code}`" not in text]
    assert missing == []


# ---------------------------------------------------------------- exceptions that used to escape


def test_device_common_name_that_is_not_valid_text_is_refused(hub, pki):
    from hostile import der as D

    _root, _factory, tech = pki
    key = new_key()
    for tag, value in ((0x0C, b"dev-\xff\xfe"), (0x16, b"dev-\xe9")):
        tbs = D.TBS.of(tech.issue("x")[1])
        tbs.spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tbs.subject = D.seq(D.tlv(0x31, D.seq(D.oid("2.5.4.3"), D.tlv(tag, value))))
        refused("device_id_invalid", hub.begin, [tbs.sign(tech.key)] + [der(c) for c in tech.chain()])


def test_ca_with_a_malformed_name_constraint_ip_range_is_refused():
    from hostile import der as D

    key = new_key()
    cert = make_cert("Odd-NC", key.public_key(), "Odd-NC", key, ca=True)
    tbs = D.TBS.of(cert)
    bad_range = (D.seq(D.tlv(0xA0, D.seq(D.tlv(0x87, b"\x0a\x00\x00\x00\xff\xff")))),)  # 6 bytes: no IP/mask
    tbs.extensions = [*tbs.extensions, D.extension("2.5.29.30", bad_range[0], True)]
    refused("malformed_input", engine().register_ca, tbs.sign(key))


def test_remove_ca_accepts_the_id_in_upper_case(pki):
    eng = engine()
    ca_id = trust(eng, pki[0])
    eng.remove_ca(ca_id.upper())
    assert eng.list_cas() == []
    refused("ca_not_found", eng.get_ca, ca_id)


def test_time_is_whole_seconds_on_both_paths(pki):
    """A millisecond past notAfter is still inside the second notAfter names, as the verifier rounds."""
    root, _factory, tech = pki
    key, cert = tech.issue("edge", validity=(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), NOW))
    chain = [der(cert)] + [der(c) for c in tech.chain()]
    for warm in (False, True):
        clock = FakeClock(NOW.timestamp() + 0.999)
        eng = engine(clock, policy=EnginePolicy(chain=ChainPolicy(warm=warm)))
        trust(eng, root)
        assert authenticate(eng, key, chain).device_id == "edge"
        clock.t = NOW.timestamp() + 1.0
        refused("cert_expired", eng.begin, chain)
