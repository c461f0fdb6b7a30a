"""The supply-chain PKI factory: refusals first, then key custody, chain validity, profiles, determinism."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from devicekit.pki import (
    ALGORITHMS,
    DEFAULT_CUSTODIANS,
    NOT_AFTER,
    NOT_BEFORE,
    Custodian,
    Device,
    SupplyChain,
    generate_key,
)
from hubsim import key_algorithm, verify_signature

WHEN = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
DER = serialization.Encoding.DER
PRIVATE_TYPES = (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)

# RSA key generation is slow: build RSA chains once per module.
_RSA_CACHE: dict = {}


def rsa_chain(depth: int) -> SupplyChain:
    if depth not in _RSA_CACHE:
        _RSA_CACHE[depth] = SupplyChain.build(depth, "rsa2048")
    return _RSA_CACHE[depth]


def chain_for(alg: str, depth: int, **kw) -> SupplyChain:
    if alg == "rsa2048" and not kw:
        return rsa_chain(depth)
    return SupplyChain.build(depth, alg, seed=None if alg == "rsa2048" else b"pki-tests", **kw)


def verifier(anchor: x509.Certificate, when=WHEN):
    return (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(when)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.webpki_defaults_ee().may_be_present(
                x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
            ),
        )
        .build_client_verifier()
    )


def verify(chain: SupplyChain, device: Device, when=WHEN):
    return verifier(chain.company.certificate, when).verify(device.certificate, device.chain)


# --- refusals --------------------------------------------------------------------------------------------
def test_rsa_with_seed_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="rsa2048 keys cannot be derived from a seed"):
        generate_key("rsa2048", seed=b"s")
    with pytest.raises(ValueError, match="cannot be derived from a seed"):
        SupplyChain.build(1, "rsa2048", seed=b"s")


@pytest.mark.parametrize("alg", ["p521", "rsa1024", "", "P256"])
def test_unknown_algorithm_refused(alg):
    with pytest.raises(ValueError, match="unknown algorithm"):
        generate_key(alg)
    with pytest.raises(ValueError, match="unknown algorithm"):
        SupplyChain.build(1, alg)


@pytest.mark.parametrize("depth", [-1, 6, 2.0, True, "2"])
def test_bad_depth_refused(depth):
    with pytest.raises(ValueError, match="depth must be an integer from 0 to 5"):
        SupplyChain.build(depth)


def test_expired_and_not_yet_valid_chains_fail_verification():
    expired = SupplyChain.build(
        2,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        seed=b"x",
    )
    with pytest.raises(VerificationError):
        verify(expired, expired.device("d1"))
    future = SupplyChain.build(2, not_before=dt.datetime(2040, 1, 1, tzinfo=dt.UTC), seed=b"x")
    with pytest.raises(VerificationError):
        verify(future, future.device("d1"))


def test_device_of_another_company_does_not_verify():
    a, b = SupplyChain.build(2, seed=b"a"), SupplyChain.build(2, seed=b"b")
    with pytest.raises(VerificationError):
        verify(a, b.device("d1"))


def test_missing_intermediate_does_not_verify():
    chain = SupplyChain.build(2, seed=b"a")
    device = chain.device("d1")
    with pytest.raises(VerificationError):
        verifier(chain.company.certificate).verify(device.certificate, device.chain[:1])


# --- custody ---------------------------------------------------------------------------------------------
def _private_keys_in(obj) -> list:
    found = []
    for slot in type(obj).__slots__:
        value = getattr(obj, slot, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in values if isinstance(v, PRIVATE_TYPES)]
    return found


def test_each_custodian_holds_only_its_own_key():
    chain = SupplyChain.build(3, purchased=True, seed=b"custody")
    holders = [chain.public_root, chain.company, *chain.custodians]
    assert [c.name for c in chain.custodians] == list(DEFAULT_CUSTODIANS[:3])
    seen = []
    for custodian in holders:
        assert not hasattr(custodian, "__dict__")  # no hidden attributes beyond the declared slots
        keys = _private_keys_in(custodian)
        assert len(keys) == 1
        # its one key belongs to its own certificate
        assert keys[0].public_key() == custodian.certificate.public_key()
        seen.append(keys[0])
        # no public attribute hands a private key out
        for name in dir(custodian):
            if not name.startswith("_"):
                value = getattr(custodian, name)
                assert not isinstance(value, PRIVATE_TYPES), name
    assert len({id(k) for k in seen}) == len(holders)
    # a custodian keeps no reference to its issuer or to its successors
    for custodian in holders:
        for slot in type(custodian).__slots__:
            assert not isinstance(getattr(custodian, slot, None), Custodian)


def test_device_holds_only_its_own_key():
    chain = SupplyChain.build(2, seed=b"custody")
    device = chain.device("d1")
    keys = _private_keys_in(device)
    assert len(keys) == 1 and keys[0].public_key() == device.certificate.public_key()


def test_enroll_signs_only_the_new_public_key():
    company = Custodian.root(seed=b"e")
    factory = company.enroll("Factory-Y", seed=b"e")
    assert factory.certificate.issuer == company.certificate.subject
    assert factory.certificate.public_key() != company.certificate.public_key()
    factory.certificate.verify_directly_issued_by(company.certificate)


# --- chains verify ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("depth", range(6))
def test_chain_verifies_for_every_depth_and_algorithm(alg, depth):
    chain = chain_for(alg, depth)
    device = chain.device("device-0001")
    result = verify(chain, device)
    assert len(result.chain) == depth + 2  # leaf, custodians, Company-X
    assert result.chain[-1] == chain.company.certificate
    assert device.chain == chain.intermediates()
    assert [c.subject for c in device.chain] == [c.certificate.subject for c in reversed(chain.custodians)]
    assert key_algorithm(device.public_key) == alg
    ca_alg = "p256" if alg == "ed25519" else alg
    assert all(c.algorithm == ca_alg for c in [chain.company, *chain.custodians])
    # chain_der / chain_pem are leaf first
    ders = device.chain_der()
    assert ders[0] == device.certificate.public_bytes(DER)
    assert [x509.load_der_x509_certificate(d) for d in ders[1:]] == device.chain
    assert x509.load_pem_x509_certificates(device.chain_pem()) == [device.certificate, *device.chain]


@pytest.mark.parametrize("alg", ["p256", "rsa2048"])
def test_purchased_root_registers_company_x(alg):
    chain = SupplyChain.build(2, alg, purchased=True, seed=None if alg == "rsa2048" else b"buy")
    assert chain.public_root is not None
    company = chain.company.certificate
    assert company.issuer == chain.public_root.certificate.subject != company.subject
    company.verify_directly_issued_by(chain.public_root.certificate)
    device = chain.device("d1")
    result = verify(chain, device)  # anchored at Company-X, not the public root
    assert result.chain[-1] == company
    assert chain.public_root.certificate not in device.chain and company not in device.chain


def test_path_lengths_decrease_to_zero_at_the_issuer():
    chain = SupplyChain.build(3, seed=b"pl")
    lengths = [
        c.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        for c in chain.custodians
    ]
    assert lengths == [2, 1, 0]


# --- determinism -----------------------------------------------------------------------------------------
def _all_der(chain: SupplyChain, device: Device) -> list[bytes]:
    holders = [chain.public_root, chain.company, *chain.custodians]
    return [h.certificate.public_bytes(DER) for h in holders if h] + device.chain_der()


@pytest.mark.parametrize("alg", ["p256", "p384", "ed25519"])
def test_same_seed_gives_identical_der(alg):
    a = SupplyChain.build(3, alg, purchased=True, seed=b"same")
    b = SupplyChain.build(3, alg, purchased=True, seed=b"same")
    assert _all_der(a, a.device("d7")) == _all_der(b, b.device("d7"))
    assert a.company.verification_certificate("ABC").public_bytes(DER) == b.company.verification_certificate(
        "ABC"
    ).public_bytes(DER)


def test_different_seed_or_no_seed_differs():
    a = _all_der(s := SupplyChain.build(2, seed=b"one"), s.device("d"))
    b = _all_der(s := SupplyChain.build(2, seed=b"two"), s.device("d"))
    c = _all_der(s := SupplyChain.build(2), s.device("d"))
    d = _all_der(s := SupplyChain.build(2), s.device("d"))
    for i in range(len(a)):
        assert len({a[i], b[i], c[i], d[i]}) == 4


def test_seeded_keys_are_in_range_and_distinct_per_label():
    keys = [generate_key("p384", seed=b"s", label=bytes([i])) for i in range(20)]
    values = {k.private_numbers().private_value for k in keys}
    assert len(values) == 20 and all(v > 0 for v in values)
    assert (
        generate_key("ed25519", seed=b"s", label=b"x").private_bytes_raw()
        == generate_key("ed25519", seed=b"s", label=b"x").private_bytes_raw()
    )


def test_default_validity_is_fixed():
    chain = SupplyChain.build(1, seed=b"v")
    for cert in [chain.company.certificate, chain.custodians[0].certificate, chain.device("d").certificate]:
        assert cert.not_valid_before_utc == NOT_BEFORE
        assert cert.not_valid_after_utc == NOT_AFTER


# --- profiles --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_device_certificate_profile(alg):
    chain = chain_for(alg, 2)
    cert = chain.device("device-42").certificate
    assert cert.version == x509.Version.v3
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-42")])
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuer_ski = chain.issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == issuer_ski.digest
    with pytest.raises(x509.ExtensionNotFound):
        ext.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(ext) == 5
    expected_hash = "sha384" if alg == "p384" else "sha256"
    assert cert.signature_hash_algorithm.name == expected_hash


def test_ca_certificate_profile():
    chain = SupplyChain.build(1, "p384", seed=b"ca")
    for custodian in (chain.company, chain.custodians[0]):
        cert = custodian.certificate
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca is True
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        assert cert.signature_hash_algorithm.name == "sha384"
    assert chain.company.certificate.issuer == chain.company.certificate.subject


# --- proof of possession ---------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["p256", "p384", "rsa2048"])
def test_verification_certificate_proves_the_ca_key(alg):
    chain = chain_for(alg, 1)
    code = "3F2A9C41D0E87B65"
    cert = chain.company.verification_certificate(code)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == code
    assert cert.issuer == chain.company.certificate.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(chain.company.certificate)
    with pytest.raises(Exception):
        cert.verify_directly_issued_by(chain.custodians[0].certificate)
    signature = chain.company.sign_code(code)
    assert verify_signature(chain.company.certificate.public_key(), signature, code.encode("ascii"))
    assert not verify_signature(chain.company.certificate.public_key(), signature, b"another code")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_device_proof_of_possession(alg):
    chain = chain_for(alg, 1)
    device = chain.device("d-pop")
    challenge = b"\x01" * 32
    signature = device.sign(challenge)
    assert verify_signature(device.certificate.public_key(), signature, challenge)
    assert not verify_signature(device.certificate.public_key(), signature, b"\x02" * 32)
    other = chain.device("d-other")
    assert not verify_signature(other.certificate.public_key(), signature, challenge)
