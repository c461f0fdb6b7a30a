"""Mutations of a valid device upload, made at the DER level, for the warm-versus-cold differential.

Nothing here comes from the template the fleet factory uses: each mutation takes a valid device
certificate apart into raw TBSCertificate fields (``hostile.der``), changes one thing -- a field, an
encoding, a key parameter, an extension, the signature, the shape of the chain or an intermediate -- and
signs the result again with the right issuer key, so that the change is the only difference. Every case
states the verdict the full verifier must reach (``expect``: an error code, or ``ok`` for an admission)
and whether the warm path must judge it itself (``warm``: the upload is made only of cached certificates,
so a cached issuer is consulted) or may only hand it on (an unknown intermediate).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import chainkit as ck
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.rsa import (
    RSAPrivateNumbers,
    RSAPublicNumbers,
    rsa_crt_dmp1,
    rsa_crt_dmq1,
    rsa_crt_iqmp,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from hostile import der as D

NOW = ck.NOW
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class World:
    """Company-X → Factory-Y → Technician-Z (P-256), a P-384 and an RSA company beside it, and the pool
    of diverse valid siblings an engine is primed with before it judges a mutation."""

    def __init__(self):
        self.root = ck.CA("Company-X")
        self.factory = ck.CA("Factory-Y", parent=self.root, path_length=2)
        self.tech = ck.CA("Technician-Z", parent=self.factory, path_length=0)
        # A second Technician-Z: same subject, own key, signed by the same factory (a re-issued custodian).
        self.tech_twin = ck.CA("Technician-Z", parent=self.factory, path_length=0)
        self.other_tech = ck.CA("Technician-W", parent=self.factory, path_length=0)
        self.rsa_root = ck.CA("Company-RSA", "rsa2048")
        self.rsa_tech = ck.CA("Technician-R", "rsa2048", parent=self.rsa_root, path_length=0)
        self.p384_root = ck.CA("Company-P384", "p384")
        self.stranger = ck.CA("Company-X")  # the real root's name, never registered
        self.stranger_tech = ck.CA("Technician-Z", parent=self.stranger, path_length=0)
        self.roots = (self.root, self.rsa_root, self.p384_root)
        self.siblings = list(self._siblings())

    def _siblings(self):
        """(key, chain) of valid devices of several shapes, under every issuer the mutations use."""
        san_dns = x509.SubjectAlternativeName([x509.DNSName("sib-dns.devices.example.com")])
        san_uri = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:dev:sib-uri")])
        unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00")
        shapes = [
            ("p256", {}),
            ("p384", {}),
            ("ed25519", {}),
            ("rsa2048", {}),
            ("p256", {"extra": [(san_dns, False)]}),
            ("p256", {"extra": [(san_uri, False)]}),
            ("p256", {"key_usage": None, "eku": None, "ski": False}),
            ("p256", {"extra": [(unknown, False)]}),
        ]
        for i, (alg, kwargs) in enumerate(shapes):
            key, cert = self.tech.issue(f"sibling-{i}", alg, **kwargs)
            yield key, chain(cert, self.tech)
        for i, ca in enumerate((self.tech_twin, self.other_tech, self.rsa_tech)):
            key, cert = ca.issue(f"sibling-ca-{i}")
            yield key, chain(cert, ca)
        key, cert = self.root.issue("sibling-direct")
        yield key, [ck.der(cert)]
        key, cert = self.p384_root.issue("sibling-p384-root", "p384")
        yield key, [ck.der(cert)]

    def engine(self, *, warm: bool, primed: bool):
        from hubsim import ChainPolicy, EnginePolicy

        eng = ck.engine(policy=EnginePolicy(chain=ChainPolicy(warm=warm)))
        for root in self.roots:
            ck.trust(eng, root)
        if primed:
            for key, upload in self.siblings:
                assert verdict(eng, upload, key) == "ok"
        return eng


def chain(cert, ca: ck.CA) -> list[bytes]:
    return [ck.der(cert)] + [ck.der(c) for c in ca.chain()]


def verdict(eng, upload, key) -> str:
    """``ok``, or the refusal's code; at which step is part of the answer (``proof:`` for the second)."""
    from hubsim import AuthError, sign

    try:
        challenge = eng.begin(upload)
    except AuthError as exc:
        return exc.code
    try:
        signature = sign(key, challenge.token) if key is not None else b"\x30\x06\x02\x01\x01\x02\x01\x01"
        eng.complete(challenge.token, signature)
    except AuthError as exc:
        return "proof:" + exc.code
    return "ok"


@dataclass
class Case:
    name: str
    expect: str  # the full verifier's verdict: "ok", an error code, or "proof:<code>"
    make: Callable[[World], tuple[list[bytes], object]]  # -> (upload, device private key or None)
    warm: bool = True  # the warm path must judge it (every upload certificate is cached)
    revoke: Callable[[World, list], str] | None = None  # (world, upload) -> fingerprint to revoke first
    exact: bool = True  # the upload is exactly a cached path (so a re-admission is a reconnect)
    tags: tuple[str, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------ building blocks

_serials = iter(range(10**6, 10**7))


def _base_tbs(ca: ck.CA, key, *, cn="mutant", san=True) -> D.TBS:
    extra = [(x509.SubjectAlternativeName([x509.DNSName(f"{cn}.devices.example.com")]), False)] if san else []
    cert = ck.make_cert(
        cn, key.public_key(), ca.cn, ca.key, ca=False, aki_key=ca.key.public_key(), extra=extra, serial=next(_serials)
    )
    return D.TBS.of(cert)


def leaf_case(
    name,
    expect,
    edit,
    *,
    alg="p256",
    key_factory=None,
    signer=None,
    algorithm=None,
    outer=None,
    post=None,
    ca_attr="tech",
    **kw,
):
    """A device under Technician-Z whose TBS ``edit`` changes, signed again by the technician."""

    def make(w: World):
        ca = getattr(w, ca_attr)
        key = key_factory() if key_factory else ck.new_key(alg)
        tbs = _base_tbs(ca, key)
        edit(tbs, w, key)
        signing_key = signer(w) if signer else ca.key
        leaf = tbs.sign(signing_key, algorithm, outer=outer)
        if post:
            leaf = post(leaf, w)
        return [leaf] + [ck.der(c) for c in ca.chain()], key

    return Case(name, expect, make, **kw)


def _set(field_name, value):
    def edit(tbs, w, key):
        setattr(tbs, field_name, value(w, key) if callable(value) else value)

    return edit


def _name(*rdns) -> bytes:
    """A Name from (oid, tag, value bytes) per RDN; a list inside one RDN makes it multi-valued."""
    out = []
    for rdn in rdns:
        atvs = rdn if isinstance(rdn, list) else [rdn]
        out.append(D.tlv(0x31, b"".join(D.seq(D.oid(o), D.tlv(tag, value)) for o, tag, value in atvs)))
    return D.seq(*out)


CN = "2.5.4.3"
UTF8, PRINTABLE, IA5, BMP, T61 = 0x0C, 0x13, 0x16, 0x1E, 0x14


def _utc(moment: dt.datetime) -> bytes:
    return D.tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())


def _gen(moment: dt.datetime, text: str | None = None) -> bytes:
    return D.tlv(0x18, (text or moment.strftime("%Y%m%d%H%M%SZ")).encode())


START, END = ck.CURRENT


def _validity(nb: bytes, na: bytes) -> bytes:
    return D.seq(nb, na)


def _ext(extension, critical=False) -> bytes:
    """The raw Extension element cryptography writes for ``extension``."""
    key = ck.new_key()
    cert = ck.make_cert(
        "x",
        key.public_key(),
        "x",
        key,
        ca=False,
        key_usage=None,
        eku=None,
        ski=False,
        bc=False,
        extra=[(extension, critical)],
    )
    return D.TBS.of(cert).extensions[0]


def _ext_oid(raw: bytes) -> bytes:
    return D.children(raw)[0]


def _replace_ext(tbs: D.TBS, dotted: str, raw: bytes | None):
    marker = D.oid(dotted)
    kept = [e for e in tbs.extensions if _ext_oid(e) != marker]
    tbs.extensions = kept + ([raw] if raw is not None else [])


def ext_edit(dotted: str, raw):
    def edit(tbs, w, key):
        _replace_ext(tbs, dotted, raw(w, key) if callable(raw) else raw)

    return edit


def add_ext(raw):
    def edit(tbs, w, key):
        tbs.extensions = [*tbs.extensions, raw(w, key) if callable(raw) else raw]

    return edit


def _ku(**flags) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    values = {n: flags.get(n, False) for n in names}
    return x509.KeyUsage(**values)


@functools.cache
def _rsa_with_exponent(bits: int, e: int):
    """An RSA key pair with any odd public exponent coprime to phi (cryptography only generates 3 and
    65537), so the device can still sign its proof."""
    while True:
        base = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
        p, q = base.p, base.q
        phi = (p - 1) * (q - 1)
        try:
            d = pow(e, -1, phi)
        except ValueError:
            continue
        return RSAPrivateNumbers(
            p, q, d, rsa_crt_dmp1(d, p), rsa_crt_dmq1(d, q), rsa_crt_iqmp(p, q), RSAPublicNumbers(e, p * q)
        ).private_key(unsafe_skip_rsa_key_validation=True)


@functools.cache
def _rsa_bits(bits: int):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _spki_of(key) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _ec_spki(curve_oid: str, point: bytes) -> bytes:
    return D.seq(D.seq(D.oid("1.2.840.10045.2.1"), D.oid(curve_oid)), D.bits(point))


def _compressed(w, key) -> bytes:
    return _ec_spki("1.2.840.10045.3.1.7", key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint))


def _off_curve(w, key) -> bytes:
    point = bytearray(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    point[-1] ^= 0x01
    return _ec_spki("1.2.840.10045.3.1.7", bytes(point))


def _hybrid(w, key) -> bytes:
    point = bytearray(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    point[0] = 0x06 | (point[-1] & 1)
    return _ec_spki("1.2.840.10045.3.1.7", bytes(point))


def _p192(w, key) -> bytes:
    from hostile.corpus import _p192_spki

    return _p192_spki()


def _ec_params_null(w, key) -> bytes:
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return D.seq(D.seq(D.oid("1.2.840.10045.2.1"), D.NULL), D.bits(point))


def _rsa_params_missing(w, key) -> bytes:
    spki = D.children(_spki_of(key))
    return D.seq(D.seq(D.oid("1.2.840.113549.1.1.1")), spki[1])


def _rsa_pss_spki(w, key) -> bytes:
    spki = D.children(_spki_of(key))
    return D.seq(D.seq(D.oid("1.2.840.113549.1.1.10")), spki[1])


# ------------------------------------------------------------------------------------ signature edits


def _resplit(cert: bytes):
    tbs, alg, sig = D.children(cert)
    return tbs, alg, D.element(sig)


def _unused_bits(padding_bit: int):
    """The signature BIT STRING claims one unused bit; the signature is made again until its last bit is
    ``padding_bit`` (0: DER-valid padding, 1: not), so the case does not depend on a random signature."""

    def post(cert: bytes, w) -> bytes:
        tbs, alg, _ = D.children(cert)
        while True:
            signature = D.ALGORITHMS["ecdsa-sha256"][1](w.tech.key, tbs)
            if signature[-1] & 1 == padding_bit:
                return D.seq(tbs, alg, D.tlv(0x03, b"\x01" + signature))

    return post


def _high_s(cert: bytes, w) -> bytes:
    tbs, alg, sig = D.children(cert)
    _, start, end = D.element(sig)
    r, s = decode_dss_signature(sig[start + 1 : end])
    return D.seq(tbs, alg, D.bits(encode_dss_signature(r, _P256_ORDER - s)))


def _truncated_signature(cert: bytes, w) -> bytes:
    tbs, alg, sig = D.children(cert)
    _, start, end = D.element(sig)
    return D.seq(tbs, alg, D.bits(sig[start + 1 : end - 3]))


def _trailing_after_signature(cert: bytes, w) -> bytes:
    tbs, alg, sig = D.children(cert)
    _, start, end = D.element(sig)
    return D.seq(tbs, alg, D.bits(sig[start + 1 : end] + b"\x00"))


def _flip_tbs_after_signing(cert: bytes, w) -> bytes:
    tbs, alg, sig = D.children(cert)
    body = bytearray(tbs)
    body[-5] ^= 0x01
    return D.seq(bytes(body), alg, sig)


def _outer(dotted: str, null=False) -> bytes:
    return D.seq(D.oid(dotted), *([D.NULL] if null else []))


# ------------------------------------------------------------------------------------ chain shapes


def shape_case(name, expect, arrange, *, warm=True, revoke=None, alg="p256", ca_attr="tech", exact=True):
    def make(w: World):
        ca = getattr(w, ca_attr)
        key, cert = ca.issue(
            f"shape-{name}",
            alg,
            extra=[(x509.SubjectAlternativeName([x509.DNSName(f"shape-{name}.devices.example.com")]), False)],
        )
        return arrange(ck.der(cert), w), key

    return Case(name, expect, make, warm=warm, revoke=revoke, exact=exact)


def _d(c) -> bytes:
    return ck.der(c)


def intermediate_case(name, expect, **changes):
    """Technician-Z re-signed by Factory-Y with one change; the device is signed by the same technician
    key, so only the intermediate differs. Never cached, so the warm path can only hand it on."""

    def make(w: World):
        tbs = D.TBS.of(w.tech.cert)
        tbs.serial = D.integer(next(_serials))
        for key_name, value in changes.items():
            if key_name == "ext":
                dotted, raw = value
                _replace_ext(tbs, dotted, raw(w) if callable(raw) else raw)
            else:
                setattr(tbs, key_name, value(w) if callable(value) else value)
        tech = tbs.sign(w.factory.key)
        key, cert = w.tech.issue(
            f"inter-{name}",
            extra=[(x509.SubjectAlternativeName([x509.DNSName(f"inter-{name}.devices.example.com")]), False)],
        )
        return [_d(cert), tech, _d(w.factory.cert)], key

    # A path with name constraints is never cached: it goes cold every time.
    return Case(name, expect, make, warm=False, exact="name-constraints" not in name)


def _fp(cert) -> bytes:
    return cert.fingerprint(hashes.SHA256()).hex()


# ------------------------------------------------------------------------------------ the cases


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append
    utc_nb, utc_na = _utc(START), _utc(END)

    # version
    add(leaf_case("version-v1", "chain_untrusted", _set("version", None), tags=("version",)))
    add(leaf_case("version-v2", "malformed_input", _set("version", D.tlv(0xA0, D.integer(1)))))
    add(leaf_case("version-v4", "malformed_input", _set("version", D.tlv(0xA0, D.integer(3)))))
    add(leaf_case("version-explicit-long", "malformed_input", _set("version", D.tlv(0xA0, D.tlv(0x02, b"\x00\x02")))))
    # serial
    for label, raw, expect in (
        ("zero", D.tlv(0x02, b"\x00"), "malformed_input"),
        ("negative", D.tlv(0x02, b"\xff\x01"), "malformed_input"),
        ("one-byte", D.tlv(0x02, b"\x01"), "ok"),
        ("20-bytes", D.tlv(0x02, b"\x01" * 20), "ok"),
        ("21-bytes", D.tlv(0x02, b"\x01" * 21), "ok"),
        ("non-minimal", D.tlv(0x02, b"\x00\x01"), "malformed_input"),
        ("empty", D.tlv(0x02, b""), "malformed_input"),
        ("high-bit-20", D.tlv(0x02, b"\x00" + b"\x81" * 19), "ok"),
    ):
        add(leaf_case(f"serial-{label}", expect, _set("serial", raw)))
    # signature algorithm, inner and outer
    add(leaf_case("sigalg-inner-sha384", "chain_untrusted", lambda t, w, k: None, outer=_outer("1.2.840.10045.4.3.3")))
    add(leaf_case("sigalg-sha384", "ok", lambda t, w, k: None, algorithm="ecdsa-sha384"))
    add(leaf_case("sigalg-sha1", "unsupported_algorithm", lambda t, w, k: None, algorithm="ecdsa-sha1"))
    add(
        leaf_case(
            "sigalg-outer-null-params",
            "malformed_input",
            lambda t, w, k: None,
            outer=_outer("1.2.840.10045.4.3.2", null=True),
        )
    )
    add(leaf_case("sigalg-outer-unknown", "unsupported_algorithm", lambda t, w, k: None, outer=_outer("1.2.3.4.5")))
    add(
        leaf_case(
            "sigalg-rsa-under-ec-issuer",
            "chain_untrusted",
            lambda t, w, k: None,
            outer=_outer("1.2.840.113549.1.1.11", null=True),
        )
    )
    add(leaf_case("sig-rsa-sha256-by-rsa-tech", "ok", lambda t, w, k: None, ca_attr="rsa_tech"))
    add(
        leaf_case(
            "sig-rsa-sha1-by-rsa-tech",
            "unsupported_algorithm",
            lambda t, w, k: None,
            ca_attr="rsa_tech",
            algorithm="rsa-sha1",
        )
    )
    add(
        leaf_case(
            "sig-rsa-md5-by-rsa-tech",
            "unsupported_algorithm",
            lambda t, w, k: None,
            ca_attr="rsa_tech",
            algorithm="rsa-md5",
        )
    )
    # issuer name
    for label, name, expect in (
        ("other-cn", _name((CN, UTF8, b"Technician-Q")), "chain_untrusted"),
        ("printable", _name((CN, PRINTABLE, b"Technician-Z")), "chain_untrusted"),
        ("case", _name((CN, UTF8, b"technician-z")), "chain_untrusted"),
        ("extra-rdn", _name((CN, UTF8, b"Technician-Z"), ("2.5.4.10", UTF8, b"X")), "chain_untrusted"),
        ("empty", D.seq(), "chain_untrusted"),
        ("trailing-space", _name((CN, UTF8, b"Technician-Z ")), "chain_untrusted"),
    ):
        add(leaf_case(f"issuer-{label}", expect, _set("issuer", name)))
    # validity and its encoding
    y2049 = dt.datetime(2049, 12, 31, tzinfo=dt.UTC)
    y2051 = dt.datetime(2051, 1, 1, tzinfo=dt.UTC)
    for label, nb, na, expect in (
        ("generalized-notbefore", _gen(START), utc_na, "chain_untrusted"),
        ("generalized-notafter", utc_nb, _gen(END), "chain_untrusted"),
        ("generalized-both", _gen(START), _gen(END), "chain_untrusted"),
        ("generalized-2049", utc_nb, _gen(y2049), "chain_untrusted"),
        ("generalized-2051", utc_nb, _gen(y2051), "ok"),
        ("utc-2051", utc_nb, D.tlv(0x17, b"510101000000Z"), "cert_expired"),
        ("utc-no-seconds", D.tlv(0x17, START.strftime("%y%m%d%H%MZ").encode()), utc_na, "malformed_input"),
        ("utc-offset", D.tlv(0x17, START.strftime("%y%m%d%H%M%S+0100").encode()), utc_na, "malformed_input"),
        ("generalized-fraction", utc_nb, _gen(END, END.strftime("%Y%m%d%H%M%S.5Z")), "malformed_input"),
        ("generalized-local", utc_nb, _gen(END, END.strftime("%Y%m%d%H%M%S")), "malformed_input"),
        ("expired", _utc(NOW - dt.timedelta(days=9)), _utc(NOW - dt.timedelta(seconds=1)), "cert_expired"),
        ("not-yet", _utc(NOW + dt.timedelta(seconds=1)), utc_na, "cert_not_yet_valid"),
        ("ends-now", utc_nb, _utc(NOW), "ok"),
        ("starts-now", _utc(NOW), utc_na, "ok"),
        ("inverted", utc_na, utc_nb, "cert_not_yet_valid"),
        ("beyond-issuer", utc_nb, _utc(END + dt.timedelta(days=3650)), "ok"),
        ("before-issuer", _utc(START - dt.timedelta(days=3650)), utc_na, "ok"),
    ):
        add(leaf_case(f"validity-{label}", expect, _set("validity", _validity(nb, na))))
    # subject and the device id
    for label, subject, expect in (
        ("no-cn", _name(("2.5.4.10", UTF8, b"Org")), "device_id_missing"),
        ("empty-subject", D.seq(), "device_id_missing"),
        ("two-cn", _name((CN, UTF8, b"a"), (CN, UTF8, b"b")), "device_id_missing"),
        ("multi-valued-cn", _name([(CN, UTF8, b"a"), ("2.5.4.10", UTF8, b"Org")]), "ok"),
        ("empty-cn", _name((CN, UTF8, b"")), "device_id_missing"),
        ("bad-utf8", _name((CN, UTF8, b"dev-\xff\xfe")), "device_id_invalid"),
        ("ia5-non-ascii", _name((CN, IA5, b"dev-\xe9")), "device_id_invalid"),
        ("printable-cn", _name((CN, PRINTABLE, b"dev-printable")), "ok"),
        ("ia5-cn", _name((CN, IA5, b"dev-ia5")), "ok"),
        ("bmp-cn", _name((CN, BMP, "dev-bmp".encode("utf-16-be"))), "ok"),
        ("bmp-odd-length", _name((CN, BMP, b"dev")), "malformed_input"),
        ("t61-cn", _name((CN, T61, b"dev-t61")), "ok"),
        ("unicode-cn", _name((CN, UTF8, "dév-ü-✓".encode())), "ok"),
        ("long-cn", _name((CN, UTF8, b"d" * 64)), "ok"),
        ("over-long-cn", _name((CN, UTF8, b"d" * 1100)), "device_id_missing"),
        ("cn-with-other-attrs", _name(("2.5.4.6", PRINTABLE, b"DE"), (CN, UTF8, b"dev-de")), "ok"),
        ("same-as-issuer", _name((CN, UTF8, b"Technician-Z")), "ok"),
        ("nul-in-cn", _name((CN, UTF8, b"dev\x00x")), "ok"),
    ):
        add(leaf_case(f"subject-{label}", expect, _set("subject", subject)))
    # keys: type, curve, size, exponent, point encoding
    for label, kwargs, expect in (
        ("p384", {"alg": "p384"}, "ok"),
        ("p521", {"key_factory": lambda: ec.generate_private_key(ec.SECP521R1())}, "ok"),
        ("ed25519", {"alg": "ed25519"}, "ok"),
        ("rsa2048", {"alg": "rsa2048"}, "ok"),
        ("rsa3072", {"key_factory": lambda: _rsa_bits(3072)}, "ok"),
        ("secp256k1", {"alg": "secp256k1"}, "unsupported_algorithm"),
        ("ed448", {"key_factory": ed448.Ed448PrivateKey.generate}, "unsupported_algorithm"),
        ("rsa1024", {"key_factory": lambda: _rsa_bits(1024)}, "unsupported_algorithm"),
        ("rsa2047", {"key_factory": lambda: _rsa_bits(2047)}, "unsupported_algorithm"),
        ("rsa2040", {"key_factory": lambda: _rsa_bits(2040)}, "unsupported_algorithm"),
        ("rsa-e3-2064", {"key_factory": lambda: _rsa_with_exponent(2064, 3)}, "unsupported_algorithm"),
        ("rsa-e65535", {"key_factory": lambda: _rsa_with_exponent(2048, 65535)}, "unsupported_algorithm"),
        ("rsa-e257-2056", {"key_factory": lambda: _rsa_with_exponent(2056, 257)}, "unsupported_algorithm"),
        ("rsa-e2^256+1", {"key_factory": lambda: _rsa_with_exponent(2048, 2**256 + 1)}, "unsupported_algorithm"),
        ("rsa-e2^255+1", {"key_factory": lambda: _rsa_with_exponent(2048, 2**255 + 1)}, "ok"),
        ("rsa-e65539", {"key_factory": lambda: _rsa_with_exponent(2048, 65539)}, "ok"),
    ):
        add(leaf_case(f"key-{label}", expect, lambda t, w, k: setattr(t, "spki", _spki_of(k)), **kwargs))
    add(
        leaf_case(
            "key-x25519",
            "unsupported_algorithm",
            lambda t, w, k: setattr(
                t,
                "spki",
                x25519.X25519PrivateKey.generate()
                .public_key()
                .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
            ),
        )
    )
    for label, spki, expect in (
        ("compressed-point", _compressed, "ok"),
        ("off-curve-point", _off_curve, "unsupported_algorithm"),
        ("hybrid-point", _hybrid, "ok"),
        ("p192", _p192, "unsupported_algorithm"),
        ("ec-null-params", _ec_params_null, "unsupported_algorithm"),
    ):
        add(leaf_case(f"spki-{label}", expect, _set("spki", spki)))
    add(leaf_case("spki-rsa-params-missing", "ok", _set("spki", _rsa_params_missing), alg="rsa2048"))
    add(leaf_case("spki-rsa-pss", "ok", _set("spki", _rsa_pss_spki), alg="rsa2048"))
    # unique identifiers
    for label, tag in (("issuer", 0x81), ("subject", 0x82)):
        add(
            leaf_case(
                f"{label}-unique-id",
                "ok",
                lambda t, w, k, tag=tag: setattr(t, "spki", t.spki + D.tlv(tag, b"\x00\x01")),
            )
        )
        add(
            leaf_case(
                f"{label}-unique-id-misplaced",
                "malformed_input",
                lambda t, w, k, tag=tag: setattr(t, "subject", t.subject + D.tlv(tag, b"\x00\x01")),
            )
        )
    # extensions
    BC, KU, EKU, SAN, SKI, AKI = "2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17", "2.5.29.14", "2.5.29.35"
    ext_cases = [
        ("bc-ca", ext_edit(BC, _ext(x509.BasicConstraints(True, None), True)), "leaf_is_ca"),
        ("bc-ca-pathlen", ext_edit(BC, _ext(x509.BasicConstraints(True, 0), True)), "leaf_is_ca"),
        ("bc-noncritical", ext_edit(BC, _ext(x509.BasicConstraints(False, None), False)), "ok"),
        ("bc-absent", ext_edit(BC, None), "ok"),
        ("bc-explicit-false", ext_edit(BC, D.extension(BC, D.seq(b"\x01\x01\x00"), True)), "malformed_input"),
        ("ku-no-digital-signature", ext_edit(KU, _ext(_ku(key_encipherment=True), True)), "key_usage_invalid"),
        ("ku-cert-sign", ext_edit(KU, _ext(_ku(digital_signature=True, key_cert_sign=True), True)), "chain_untrusted"),
        ("ku-noncritical", ext_edit(KU, _ext(_ku(digital_signature=True), False)), "ok"),
        ("ku-absent", ext_edit(KU, None), "ok"),
        ("ku-extra-bits", ext_edit(KU, _ext(_ku(digital_signature=True, key_agreement=True), True)), "ok"),
        (
            "eku-server-only",
            ext_edit(EKU, _ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]))),
            "eku_invalid",
        ),
        (
            "eku-any",
            ext_edit(EKU, _ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]))),
            "eku_invalid",
        ),
        (
            "eku-both",
            ext_edit(
                EKU, _ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]))
            ),
            "ok",
        ),
        (
            "eku-critical",
            ext_edit(EKU, _ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)),
            "chain_untrusted",
        ),
        ("eku-absent", ext_edit(EKU, None), "ok"),
        ("eku-empty", ext_edit(EKU, D.extension(EKU, D.seq())), "malformed_input"),
        ("san-absent", ext_edit(SAN, None), "ok"),
        (
            "san-uri",
            ext_edit(SAN, _ext(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:d:1")]))),
            "ok",
        ),
        (
            "san-ip",
            ext_edit(
                SAN, _ext(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("10.1.2.3"))]))
            ),
            "ok",
        ),
        ("san-email", ext_edit(SAN, _ext(x509.SubjectAlternativeName([x509.RFC822Name("d@example.com")]))), "ok"),
        (
            "san-many",
            ext_edit(SAN, _ext(x509.SubjectAlternativeName([x509.DNSName(f"n{i}.example.com") for i in range(20)]))),
            "ok",
        ),
        ("san-critical", ext_edit(SAN, _ext(x509.SubjectAlternativeName([x509.DNSName("c.example.com")]), True)), "ok"),
        ("san-empty", ext_edit(SAN, D.extension(SAN, D.seq())), "ok"),
        ("san-bad-dns", ext_edit(SAN, D.extension(SAN, D.seq(D.tlv(0x82, b"bad..name..\xff")))), "malformed_input"),
        ("san-bad-ip-length", ext_edit(SAN, D.extension(SAN, D.seq(D.tlv(0x87, b"\x01\x02\x03")))), "malformed_input"),
        ("san-garbage", ext_edit(SAN, D.extension(SAN, b"\x30\x03\x82\x05a")), "malformed_input"),
        ("san-wildcard", ext_edit(SAN, _ext(x509.SubjectAlternativeName([x509.DNSName("*.example.com")]))), "ok"),
        ("san-dup", add_ext(_ext(x509.SubjectAlternativeName([x509.DNSName("dup.example.com")]))), "malformed_input"),
        ("eku-dup", add_ext(_ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]))), "malformed_input"),
        ("ski-absent", ext_edit(SKI, None), "ok"),
        ("ski-critical", ext_edit(SKI, D.extension(SKI, D.octets(b"\x01" * 20), True)), "ok"),
        ("ski-other", ext_edit(SKI, D.extension(SKI, D.octets(b"\x02" * 20))), "ok"),
        ("ski-not-octets", ext_edit(SKI, D.extension(SKI, D.integer(5))), "malformed_input"),
        ("aki-absent", ext_edit(AKI, None), "ok"),
        ("aki-other-keyid", ext_edit(AKI, _ext(x509.AuthorityKeyIdentifier(b"\x09" * 20, None, None))), "ok"),
        (
            "aki-critical",
            ext_edit(
                AKI,
                lambda w, k: _ext(x509.AuthorityKeyIdentifier.from_issuer_public_key(w.tech.key.public_key()), True),
            ),
            "ok",
        ),
        ("unknown-critical", add_ext(D.extension("1.3.6.1.4.1.55555.9", D.NULL, True)), "chain_untrusted"),
        ("unknown-noncritical", add_ext(D.extension("1.3.6.1.4.1.55555.9", D.NULL)), "ok"),
        ("unknown-garbage-noncritical", add_ext(D.extension("1.3.6.1.4.1.55555.9", b"\xff\xff")), "ok"),
        (
            "name-constraints-on-leaf",
            add_ext(lambda w, k: _ext(x509.NameConstraints([x509.DNSName("example.com")], None), True)),
            "chain_untrusted",
        ),
        (
            "policies",
            add_ext(_ext(x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier("2.23.140.1.2.1"), None)]))),
            "ok",
        ),
        (
            "policies-critical",
            add_ext(
                _ext(x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier("2.23.140.1.2.1"), None)]), True)
            ),
            "chain_untrusted",
        ),
        (
            "crl-dp",
            add_ext(
                _ext(
                    x509.CRLDistributionPoints(
                        [
                            x509.DistributionPoint(
                                [x509.UniformResourceIdentifier("http://crl.example.com/t.crl")], None, None, None
                            )
                        ]
                    )
                )
            ),
            "ok",
        ),
        (
            "aia",
            add_ext(
                _ext(
                    x509.AuthorityInformationAccess(
                        [
                            x509.AccessDescription(
                                x509.oid.AuthorityInformationAccessOID.OCSP,
                                x509.UniformResourceIdentifier("http://o.example.com"),
                            )
                        ]
                    )
                )
            ),
            "ok",
        ),
        ("ocsp-nocheck", add_ext(_ext(x509.OCSPNoCheck())), "ok"),
        (
            "tls-feature-critical",
            add_ext(_ext(x509.TLSFeature([x509.TLSFeatureType.status_request]), True)),
            "chain_untrusted",
        ),
        ("no-extensions", lambda t, w, k: setattr(t, "extensions", []), "ok"),
        (
            "empty-extensions-seq",
            lambda t, w, k: (setattr(t, "extensions", []), setattr(t, "spki", t.spki + D.tlv(0xA3, D.seq()))),
            "ok",
        ),
        (
            "many-noncritical",
            add_ext(lambda w, k: b"".join(D.extension(f"1.3.6.1.4.1.55555.{i}", D.NULL) for i in range(30))),
            "ok",
        ),
        ("inhibit-any-policy", add_ext(_ext(x509.InhibitAnyPolicy(0), True)), "chain_untrusted"),
        ("policy-constraints", add_ext(_ext(x509.PolicyConstraints(0, None), True)), "chain_untrusted"),
        ("netscape-comment", add_ext(D.extension("2.16.840.1.113730.1.13", D.tlv(0x16, b"hi"))), "ok"),
    ]
    for label, edit, expect in ext_cases:
        add(leaf_case(f"ext-{label}", expect, edit))
    # extensions on non-P-256 devices (the same rules whatever the key)
    for alg in ("p384", "ed25519", "rsa2048"):
        add(
            leaf_case(
                f"ext-bc-ca-{alg}", "leaf_is_ca", ext_edit(BC, _ext(x509.BasicConstraints(True, None), True)), alg=alg
            )
        )
        add(
            leaf_case(
                f"ext-unknown-critical-{alg}",
                "chain_untrusted",
                add_ext(D.extension("1.3.6.1.4.1.55555.9", D.NULL, True)),
                alg=alg,
            )
        )
        add(
            leaf_case(
                f"validity-generalized-{alg}",
                "chain_untrusted",
                _set("validity", _validity(_gen(START), utc_na)),
                alg=alg,
            )
        )
    # the signature
    add(leaf_case("sig-other-key", "chain_untrusted", lambda t, w, k: None, signer=lambda w: ck.new_key()))
    add(leaf_case("sig-by-factory", "chain_untrusted", lambda t, w, k: None, signer=lambda w: w.factory.key))
    add(leaf_case("sig-by-twin-tech", "chain_untrusted", lambda t, w, k: None, signer=lambda w: w.tech_twin.key))
    add(leaf_case("sig-unused-bits-zero-padding", "ok", lambda t, w, k: None, post=_unused_bits(0)))
    add(leaf_case("sig-unused-bits-one-padding", "malformed_input", lambda t, w, k: None, post=_unused_bits(1)))
    add(leaf_case("sig-high-s", "ok", lambda t, w, k: None, post=_high_s))
    add(leaf_case("sig-truncated", "chain_untrusted", lambda t, w, k: None, post=_truncated_signature))
    add(leaf_case("sig-trailing-byte", "chain_untrusted", lambda t, w, k: None, post=_trailing_after_signature))
    add(leaf_case("sig-tbs-flipped", "chain_untrusted", lambda t, w, k: None, post=_flip_tbs_after_signing))
    # chain shapes
    T, F, R = (lambda w: _d(w.tech.cert)), (lambda w: _d(w.factory.cert)), (lambda w: _d(w.root.cert))
    shapes = [
        ("complete", "ok", lambda leaf, w: [leaf, T(w), F(w)]),
        ("with-root", "ok", lambda leaf, w: [leaf, T(w), F(w), R(w)]),
        ("reversed", "ok", lambda leaf, w: [leaf, F(w), T(w)]),
        ("reversed-with-root", "ok", lambda leaf, w: [leaf, R(w), F(w), T(w)]),
        ("missing-factory", "chain_untrusted", lambda leaf, w: [leaf, T(w)]),
        ("missing-factory-with-root", "chain_untrusted", lambda leaf, w: [leaf, T(w), R(w)]),
        ("missing-tech", "chain_untrusted", lambda leaf, w: [leaf, F(w)]),
        ("leaf-only", "chain_untrusted", lambda leaf, w: [leaf]),
        ("leaf-and-root", "chain_untrusted", lambda leaf, w: [leaf, R(w)]),
        ("duplicated-tech", "ok", lambda leaf, w: [leaf, T(w), T(w), F(w)]),
        ("leaf-twice", "ok", lambda leaf, w: [leaf, T(w), leaf, F(w)]),
        ("extra-sibling-tech", "ok", lambda leaf, w: [leaf, T(w), F(w), _d(w.other_tech.cert)]),
        ("extra-twin-tech", "chain_ambiguous", lambda leaf, w: [leaf, T(w), F(w), _d(w.tech_twin.cert)]),
        ("twin-instead", "chain_untrusted", lambda leaf, w: [leaf, _d(w.tech_twin.cert), F(w)]),
        ("extra-other-root", "ok", lambda leaf, w: [leaf, T(w), F(w), _d(w.rsa_root.cert)]),
        ("extra-rsa-tech", "ok", lambda leaf, w: [leaf, T(w), F(w), _d(w.rsa_tech.cert)]),
        ("stranger-path", "chain_untrusted", lambda leaf, w: [leaf, _d(w.stranger_tech.cert), _d(w.stranger.cert)]),
        ("leaf-first-wrong", "leaf_is_ca", lambda leaf, w: [T(w), leaf, F(w)]),
        (
            "pem-bundle",
            "ok",
            lambda leaf, w: b"".join(
                x509.load_der_x509_certificate(c).public_bytes(Encoding.PEM) for c in (leaf, T(w), F(w))
            ),
        ),
    ]
    for label, expect, arrange in shapes:
        # A stranger's path, or the device certificate where an intermediate belongs: never validated.
        unknown = label in ("stranger-path", "leaf-first-wrong")
        add(shape_case(f"chain-{label}", expect, arrange, warm=not unknown, exact=not label.startswith("extra")))
    # revocation of what a cached path holds: the revoked certificate leaves the cache, so the upload
    # holds a certificate the warm path no longer knows and is handed on
    add(
        shape_case(
            "revoked-tech",
            "cert_revoked",
            lambda leaf, w: [leaf, T(w), F(w)],
            revoke=lambda w, up: _fp(w.tech.cert),
            warm=False,
        )
    )
    add(
        shape_case(
            "revoked-factory",
            "cert_revoked",
            lambda leaf, w: [leaf, T(w), F(w)],
            revoke=lambda w, up: _fp(w.factory.cert),
            warm=False,
        )
    )
    add(
        shape_case(
            "revoked-root",
            "cert_revoked",
            lambda leaf, w: [leaf, T(w), F(w)],
            revoke=lambda w, up: _fp(w.root.cert),
            warm=False,
        )
    )
    add(
        shape_case(
            "revoked-root-direct-device",
            "cert_revoked",
            lambda leaf, w: [leaf],
            revoke=lambda w, up: _fp(w.root.cert),
            ca_attr="root",
        )
    )
    add(
        shape_case(
            "revoked-device",
            "cert_revoked",
            lambda leaf, w: [leaf, T(w), F(w)],
            revoke=lambda w, up: _fp(x509.load_der_x509_certificate(up[0])),
        )
    )
    add(
        shape_case(
            "revoked-sibling-device",
            "ok",
            lambda leaf, w: [leaf, T(w), F(w)],
            revoke=lambda w, up: _fp(x509.load_der_x509_certificate(w.siblings[0][1][0])),
        )
    )
    add(
        shape_case(
            "revoked-twin-only", "ok", lambda leaf, w: [leaf, T(w), F(w)], revoke=lambda w, up: _fp(w.tech_twin.cert)
        )
    )
    add(
        shape_case(
            "revoked-other-tech", "ok", lambda leaf, w: [leaf, T(w), F(w)], revoke=lambda w, up: _fp(w.other_tech.cert)
        )
    )
    # mutated intermediates (re-signed Technician-Z): never cached, so handed on
    for label, expect, changes in (
        ("reserialed", "ok", {}),
        (
            "expired",
            "cert_expired",
            {"validity": _validity(_utc(NOW - dt.timedelta(days=9)), _utc(NOW - dt.timedelta(days=1)))},
        ),
        ("generalized", "chain_untrusted", {"validity": _validity(_gen(START), utc_na)}),
        ("not-ca", "chain_untrusted", {"ext": (BC, _ext(x509.BasicConstraints(False, None), True))}),
        ("no-keycertsign", "chain_untrusted", {"ext": (KU, _ext(_ku(crl_sign=True, key_cert_sign=False), True))}),
        ("no-bc", "chain_untrusted", {"ext": (BC, None)}),
        ("eku-server", "eku_invalid", {"ext": (EKU, _ext(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])))}),
        (
            "name-constraints-excluding",
            "chain_untrusted",
            {"ext": ("2.5.29.30", _ext(x509.NameConstraints(None, [x509.DNSName("devices.example.com")]), True))},
        ),
        (
            "name-constraints-permitting",
            "ok",
            {"ext": ("2.5.29.30", _ext(x509.NameConstraints([x509.DNSName("devices.example.com")], None), True))},
        ),
        (
            "unknown-critical",
            "chain_untrusted",
            {"ext": ("1.3.6.1.4.1.55555.9", D.extension("1.3.6.1.4.1.55555.9", D.NULL, True))},
        ),
        ("v1", "chain_untrusted", {"version": None}),
    ):
        add(intermediate_case(f"intermediate-{label}", expect, **changes))
    return out
