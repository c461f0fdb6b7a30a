"""The hostile corpus: what an attacker, a broken client or a confused operator may send the hub.

Each :class:`Case` names one request and the exact refusal it must get (HTTP status and error code).
Cases that need no cryptography are plain data in ``static.json``; the rest are built here by small
generators from a :class:`Kit` -- a throwaway PKI with a trusted root (registered and verified on the hub
by :meth:`Kit.prepare`), an intermediate below it, a root that is registered but never verified, and a
stranger nobody registered. Bodies are made on first use, so listing the cases (pytest collection) costs
nothing.

``engine_gap`` marks a case where the hub's engine answers with the wrong code today; ``cpu_gap`` one
that costs the hub more CPU than a request may. Both name the fix; the tests expect them to fail until
it is made (strict xfail). Every private key a case uploads is recorded in :attr:`Kit.secrets`, so the
tests can look for it afterwards in the hub's database and logs.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import chainkit as ck
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.rsa import (
    RSAPrivateNumbers,
    RSAPublicNumbers,
    rsa_crt_dmp1,
    rsa_crt_dmq1,
    rsa_crt_iqmp,
)
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostile import der as D
from hostile.wire import Request
from hubsim.service.httpapi import is_management

HERE = Path(__file__).resolve().parent
PEM_FILE = "application/x-pem-file"
JSON = "application/json"
Enc, Fmt = serialization.Encoding, serialization.PrivateFormat


@dataclass
class Case:
    name: str
    category: str
    expect: tuple[int, str | None]  # (status, error code); code None: the HTTP parser's own answer
    make: Callable[[Kit], bytes] | None = None
    path: str = "/devices/challenge"
    method: str = "POST"
    content_type: str | bytes | None = PEM_FILE
    headers: tuple[tuple[str, bytes], ...] = ()
    stream: int = 0
    chunked: bool = False
    raw: Callable[[Kit], bytes] | None = None
    engine_gap: str | None = None
    cpu_gap: str | None = None
    hub_gap: str | None = None  # a bug of the service layer (hubsim/service)
    body: bytes | None = None  # static bodies
    anonymous: bool = False  # no credential even on a management path

    def management(self) -> bool:
        parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/")]
        return is_management(parts)

    def request(self, kit: Kit) -> Request:
        if self.raw is not None:
            return Request(raw=self.raw(kit))
        headers = list(self.headers)
        if self.content_type is not None:
            value = self.content_type if isinstance(self.content_type, bytes) else self.content_type.encode()
            headers.insert(0, ("Content-Type", value))
        if self.management() and not self.anonymous and not any(n.lower() == "authorization" for n, _ in headers):
            headers.append(("Authorization", b"Bearer " + kit.admin_token.encode()))  # as the operator
        body = self.body if self.body is not None else (self.make(kit) if self.make else b"")
        return Request(
            method=self.method,
            path=kit.expand(self.path),
            headers=headers,
            body=body,
            stream=self.stream,
            chunked=self.chunked,
        )


@dataclass
class Secret:
    label: str
    needles: list[bytes] = field(default_factory=list)


def _utc_window():
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=3650)


class Kit:
    """The PKI the generators draw on, and the hub state the cases refer to."""

    def __init__(self):
        self.validity = v = _utc_window()
        self.root = ck.CA("Hostile-Root", validity=v)
        self.mid = ck.CA("Hostile-Factory", parent=self.root, path_length=0, validity=v)
        self.pending = ck.CA("Pending-Root", validity=v)  # registered, never verified
        self.stranger = ck.CA("Stranger-Root", validity=v)  # never registered
        self.stranger_mid = ck.CA("Stranger-Factory", parent=self.stranger, path_length=0, validity=v)
        self.secrets: list[Secret] = []
        self.device_key, self.device_cert = self.issue("hostile-good")
        self.hub = None
        self.admin_token = ""

    # -- hub state -----------------------------------------------------------------------------------
    @property
    def pending_id(self) -> str:
        return hashlib.sha256(ck.der(self.pending.cert)).hexdigest()

    def expand(self, path: str) -> str:
        return path.replace("{pending}", self.pending_id)

    def prepare(self, hub) -> None:
        """Register and verify the root, register the pending CA (unverified). ``hub`` is a HubProcess."""
        from hubsim import sign

        self.hub = hub
        self.admin_token = hub.admin_token()
        for ca, verify in ((self.root, True), (self.pending, False)):
            reply = hub.admin("POST", "/cas", ck.pem(ca.cert), headers={"Content-Type": PEM_FILE})
            if reply.status == 409:
                continue
            assert reply.status == 201, reply
            if verify:
                doc = reply.json()
                proof = {"signature": base64.b64encode(sign(ca.key, doc["verification_code"].encode())).decode()}
                reply = hub.admin("POST", f"/cas/{doc['id']}/verify", json_body=proof)
                assert reply.status == 200, reply

    def live_challenge(self, device_id: str = "hostile-good") -> tuple[str, bytes]:
        """A fresh challenge for the kit's good device: (base64 text, token bytes)."""
        reply = self.hub.call("POST", "/devices/challenge", self.good_chain(), headers={"Content-Type": PEM_FILE})
        assert reply.status == 200, reply
        text = reply.json()["challenge"]
        return text, base64.b64decode(text)

    # -- certificates ---------------------------------------------------------------------------------
    def issue(self, cn, key=None, *, issuer=None, **kwargs):
        issuer = issuer or self.mid
        key = key or ec.generate_private_key(ec.SECP256R1())
        kwargs.setdefault("validity", self.validity)
        cert = ck.make_cert(cn, key.public_key(), issuer.cn, issuer.key, ca=False, **kwargs)
        return key, cert

    def ca_cert(self, cn, key, *, issuer=None, issuer_key=None, **kwargs):
        kwargs.setdefault("validity", self.validity)
        if issuer is not None:
            issuer_name, signer = issuer.cn, issuer.key
        else:
            issuer_name, signer = cn, issuer_key or key
        return ck.make_cert(cn, key.public_key(), issuer_name, signer, ca=True, **kwargs)

    def good_chain(self) -> bytes:
        return ck.pem(self.device_cert, self.mid.cert)

    def with_mid(self, leaf) -> bytes:
        """PEM bundle: ``leaf`` (DER bytes or certificate) then the trusted intermediate."""
        return _pem_der(leaf) + ck.pem(self.mid.cert)

    # -- keys whose leaking we check -------------------------------------------------------------------
    def secret_key(self, label: str, key, upload: bytes) -> bytes:
        """Record ``key`` (and the bytes it travels in) as material that must never be stored or logged."""
        needles = [upload] if len(upload) >= 16 else []
        try:
            pkcs8 = key.private_bytes(Enc.DER, Fmt.PKCS8, serialization.NoEncryption())
            needles.append(pkcs8)
            needles += _b64_needles(pkcs8)
        except (TypeError, ValueError):
            pass
        needles += _b64_needles(upload)
        for raw in _raw_private_values(key):
            needles += [raw, raw.hex().encode(), base64.b64encode(raw)[:40]]
        self.secrets.append(Secret(label, [n for n in needles if len(n) >= 16]))
        return upload


def _pem_der(item) -> bytes:
    """PEM armour around DER bytes (which may not even parse), or a certificate's own PEM."""
    if not isinstance(item, bytes):
        return ck.pem(item)
    text = base64.b64encode(item)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"


def _b64_needles(data: bytes) -> list[bytes]:
    """Base64 fragments that appear whether the text is one line or wrapped at 64 (PEM) or 76 columns."""
    text = base64.b64encode(data)
    out = [text[i : i + 40] for i in range(0, max(1, len(text) - 40), 228)]  # 228 = lcm(4*57, 64/..)
    for line in data.split(b"\n"):
        line = line.strip()
        if len(line) >= 40 and not line.startswith(b"-----"):
            out.append(line[:40])
    return out


def _raw_private_values(key) -> list[bytes]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.private_numbers().private_value
        return [n.to_bytes((key.curve.key_size + 7) // 8, "big")]
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        return [v.to_bytes((v.bit_length() + 7) // 8, "big") for v in (numbers.d, numbers.p, numbers.q)]
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, x25519.X25519PrivateKey)):
        return [key.private_bytes(Enc.Raw, Fmt.Raw, serialization.NoEncryption())]
    if isinstance(key, dsa.DSAPrivateKey):
        x = key.private_numbers().x
        return [x.to_bytes((x.bit_length() + 7) // 8, "big")]
    return []


# -- generators ---------------------------------------------------------------------------------------------
_RNG = random.Random(7)


def _rsa(bits: int):
    return ck._rsa_key(bits, os.getpid())


def _huge_exponent_rsa(bits: int = 3072):
    """An RSA key whose *public* exponent is as long as the modulus (d = 65537, e = its inverse)."""
    numbers = _rsa(bits).private_numbers()
    p, q = numbers.p, numbers.q
    d = 65537
    e = pow(d, -1, (p - 1) * (q - 1))
    return RSAPrivateNumbers(
        p, q, d, rsa_crt_dmp1(d, p), rsa_crt_dmq1(d, q), rsa_crt_iqmp(p, q), RSAPublicNumbers(e, p * q)
    ).private_key(unsafe_skip_rsa_key_validation=True)


def _p192_spki() -> bytes:
    """A P-192 SubjectPublicKeyInfo from a fixed test vector (made once with `openssl ecparam -name
    prime192v1`), so the case does not depend on the local OpenSSL still generating P-192 keys."""
    return bytes.fromhex((HERE / "vectors" / "p192-spki.hex").read_text().strip())


def _leaf_with_extension(kit: Kit, ext: bytes, cn="hostile-ext") -> bytes:
    _, leaf = kit.issue(cn)
    tbs = D.TBS.of(leaf)
    tbs.extensions.append(ext)
    return kit.with_mid(tbs.sign(kit.mid.key))


def _duplicate_extension_leaf(kit: Kit) -> bytes:
    _, leaf = kit.issue("hostile-dup-ext")
    tbs = D.TBS.of(leaf)
    tbs.extensions.append(tbs.extensions[0])  # BasicConstraints twice
    return kit.with_mid(tbs.sign(kit.mid.key))


def _duplicate_extension_ca(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = D.TBS.of(kit.ca_cert("Dup-Ext-Root", key))
    tbs.extensions.append(tbs.extensions[0])
    return tbs.sign(key)


def _edi_party_ca(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = D.TBS.of(kit.ca_cert("EDI-Root", key))
    tbs.extensions.append(D.extension("2.5.29.17", D.seq(D.tlv(0xA5, D.tlv(0xA1, D.tlv(0x0C, b"edi"))))))
    return tbs.sign(key)


def _same_subject_chain(kit: Kit, same_key: bool) -> bytes:
    shared = ec.generate_private_key(ec.SECP256R1())
    certs = []
    for _i in range(7):
        key = shared if same_key else ec.generate_private_key(ec.SECP256R1())
        certs.append(ck.make_cert("Loop-CA", key.public_key(), "Loop-CA", shared, ca=True, validity=kit.validity))
    _, leaf = kit.issue("hostile-loop", issuer=_Signer("Loop-CA", shared))
    return ck.pem(leaf, *certs)


class _Signer:
    """Stands in for a chainkit CA: a name and a key."""

    def __init__(self, cn, key):
        self.cn, self.key = cn, key


def _name_variants_chain(kit: Kit) -> bytes:
    """Seven CAs whose subjects are the same name in different string types: different DER (so not
    'ambiguous' by bytes), each issued by the next."""
    from cryptography.x509.name import _ASN1Type

    key = ec.generate_private_key(ec.SECP256R1())
    kinds = (
        _ASN1Type.UTF8String,
        _ASN1Type.PrintableString,
        _ASN1Type.IA5String,
        _ASN1Type.BMPString,
        _ASN1Type.T61String,
        _ASN1Type.UniversalString,
        _ASN1Type.VisibleString,
    )

    def name(kind):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop-CA", _type=kind)])

    certs = [
        ck.make_cert(name(kind), key.public_key(), name(kinds[(i + 1) % 7]), key, ca=True, validity=kit.validity)
        for i, kind in enumerate(kinds)
    ]
    leaf = ck.make_cert(
        "hostile-variants",
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        name(kinds[0]),
        key,
        ca=False,
        validity=kit.validity,
    )
    return ck.pem(leaf, *certs)


def _cycle_chain(kit: Kit) -> bytes:
    ka, kb = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    a = ck.make_cert("Cycle-A", ka.public_key(), "Cycle-B", kb, ca=True, validity=kit.validity)
    b = ck.make_cert("Cycle-B", kb.public_key(), "Cycle-A", ka, ca=True, validity=kit.validity)
    _, leaf = kit.issue("hostile-cycle", issuer=_Signer("Cycle-A", ka))
    return ck.pem(leaf, a, b)


def _deep_chain(kit: Kit, *, trusted: bool, key_factory, count: int = 7) -> bytes:
    """``count`` intermediates in a line under the trusted root (or a stranger), each with its own name."""
    top = kit.root if trusted else kit.stranger
    issuer = top
    certs = []
    for i in range(count):
        key = key_factory(i)
        cert = kit.ca_cert(f"Deep-{i}", key, issuer=issuer)
        certs.append(cert)
        issuer = _Signer(f"Deep-{i}", key)
    _, leaf = kit.issue("hostile-deep", issuer=issuer)
    return ck.pem(leaf, *reversed(certs))


def _thousand_certificates(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    certs = [
        ck.make_cert(f"bulk-{i}", key.public_key(), kit.mid.cn, kit.mid.key, ca=False, validity=kit.validity)
        for i in range(1000)
    ]
    return ck.pem(*certs)


def _nine_certificates(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    certs = [
        ck.make_cert(f"nine-{i}", key.public_key(), f"nine-{i + 1}", key, ca=True, validity=kit.validity)
        for i in range(9)
    ]
    return ck.pem(*certs)


def _flip(data: bytes, offset_from_end: int) -> bytes:
    out = bytearray(data)
    out[len(out) - offset_from_end] ^= 0x01
    return bytes(out)


def _serial_flipped(kit: Kit) -> bytes:
    """One bit of the serial number changed after signing: only the signature can tell."""
    der = ck.der(kit.issue("hostile-flip-serial")[1])
    serial = D.TBS(der).serial
    at = der.index(serial) + len(serial) - 1
    return kit.with_mid(der[:at] + bytes([der[at] ^ 1]) + der[at + 1 :])


def _pkcs12(kit: Kit, password: bytes | None, label: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    _, cert = kit.issue("p12-holder", key)
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    blob = pkcs12.serialize_key_and_certificates(b"device", key, cert, None, encryption)
    return kit.secret_key(label, key, blob)


def _pkcs12_costly_mac(kit: Kit, iterations: int) -> bytes:
    """A PKCS#12 file (version byte 2 instead of 3, so the hub's quick PKCS#12 sniffing misses it) whose
    MAC asks for ``iterations`` rounds of key derivation."""
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(b"password")
    )
    blob = pkcs12.serialize_key_and_certificates(b"device", key, None, None, encryption)
    _version, auth_safe, mac = D.children(blob)
    digest, salt, _ = D.children(mac)
    forged = D.seq(D.integer(2), auth_safe, D.seq(digest, salt, D.integer(iterations)))
    return kit.secret_key("pkcs12 with a costly MAC", key, forged)


_KEY_FACTORIES = {
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa": lambda: _rsa(2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
    "x25519": x25519.X25519PrivateKey.generate,
    "dsa": lambda: _dsa(),
}
_NONE = serialization.NoEncryption()
_PASSWORD = serialization.BestAvailableEncryption(b"correct horse")
# kind -> (key type, encoding, format, encryption)
_KEY_ENCODINGS = {
    "pkcs8-pem": ("ec", Enc.PEM, Fmt.PKCS8, _NONE),
    "pkcs8-pem-encrypted": ("ec", Enc.PEM, Fmt.PKCS8, _PASSWORD),
    "pkcs1-pem": ("rsa", Enc.PEM, Fmt.TraditionalOpenSSL, _NONE),
    "pkcs1-pem-encrypted": ("rsa", Enc.PEM, Fmt.TraditionalOpenSSL, _PASSWORD),
    "sec1-pem": ("ec", Enc.PEM, Fmt.TraditionalOpenSSL, _NONE),
    "openssh-pem": ("ed25519", Enc.PEM, Fmt.OpenSSH, _NONE),
    "pkcs8-der": ("ec", Enc.DER, Fmt.PKCS8, _NONE),
    "pkcs8-der-ed25519": ("ed25519", Enc.DER, Fmt.PKCS8, _NONE),
    "pkcs8-der-ed448": ("ed448", Enc.DER, Fmt.PKCS8, _NONE),
    "pkcs8-der-x25519": ("x25519", Enc.DER, Fmt.PKCS8, _NONE),
    "pkcs8-der-dsa": ("dsa", Enc.DER, Fmt.PKCS8, _NONE),
    "pkcs8-der-encrypted": ("ec", Enc.DER, Fmt.PKCS8, _PASSWORD),
    "pkcs1-der": ("rsa", Enc.DER, Fmt.TraditionalOpenSSL, _NONE),
    "sec1-der": ("ec", Enc.DER, Fmt.TraditionalOpenSSL, _NONE),
}


@functools.cache
def _dsa():
    return dsa.generate_private_key(1024)  # refused for its type, not its size; 2048 bits take seconds


def _private_key(kit: Kit, kind: str) -> bytes:
    """A private key in one encoding; the upload is recorded as a secret."""
    factory, encoding, fmt, encryption = _KEY_ENCODINGS[kind]
    key = _KEY_FACTORIES[factory]()
    return kit.secret_key(kind, key, key.private_bytes(encoding, fmt, encryption))


def _key_after_chain(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Enc.PEM, Fmt.PKCS8, serialization.NoEncryption())
    kit.secret_key("pkcs8 after a chain", key, pem)
    return kit.good_chain() + pem


def _key_in_certificate_block(kit: Kit, position: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(Enc.DER, Fmt.PKCS8, serialization.NoEncryption())
    body = base64.encodebytes(der)
    block = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    kit.secret_key(f"pkcs8 labelled CERTIFICATE #{position}", key, block)
    return block + kit.good_chain() if position == 0 else ck.pem(kit.device_cert) + block


def _bare_base64_key(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    text = base64.b64encode(key.private_bytes(Enc.DER, Fmt.PKCS8, serialization.NoEncryption()))
    return kit.secret_key("pkcs8 as bare base64", key, text)


def _lowercase_pem_key(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Enc.PEM, Fmt.PKCS8, serialization.NoEncryption())
    return kit.secret_key("pkcs8 with lower-case armour", key, pem.replace(b"PRIVATE KEY", b"private key"))


def _jwk(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()

    def b64u(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    doc = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(numbers.public_numbers.x),
        "y": b64u(numbers.public_numbers.y),
        "d": b64u(numbers.private_value),
    }
    raw = json.dumps(doc).encode()
    kit.secret_key("jwk", key, raw)
    kit.secrets[-1].needles.append(doc["d"].encode())
    return raw


def _pkcs7_bundle(kit: Kit) -> bytes:
    return pkcs7.serialize_certificates([kit.device_cert, kit.mid.cert, kit.root.cert], Enc.DER)


def _ber_indefinite(kit: Kit) -> bytes:
    der = ck.der(kit.device_cert)
    _, start, end = D.element(der)
    return b"\x30\x80" + der[start:end] + b"\x00\x00"


def _leaf_alg(kit: Kit, key, **kwargs) -> bytes:
    _, leaf = kit.issue("hostile-alg", key, **kwargs)
    return kit.with_mid(leaf)


def _resigned_leaf(kit: Kit, algorithm: str, key=None, issuer_key=None) -> bytes:
    _, leaf = kit.issue("hostile-resigned")
    return kit.with_mid(D.resign(leaf, issuer_key or kit.mid.key, algorithm))


def _rsa_signed_leaf(kit: Kit, algorithm: str) -> bytes:
    """A leaf under an RSA-2048 intermediate of the trusted root, signed with ``algorithm``."""
    key = _rsa(2048)
    mid = kit.ca_cert("Hostile-RSA-Factory", key, issuer=kit.root, path_length=0)
    _, leaf = kit.issue("hostile-rsa-signed", issuer=_Signer("Hostile-RSA-Factory", key))
    return _pem_der(D.resign(leaf, key, algorithm)) + ck.pem(mid)


def _intermediate_with(kit: Kit, key, signer=None, algorithm=None) -> bytes:
    """The trusted root -> an intermediate holding ``key`` -> a P-256 leaf signed by that key."""
    cert = kit.ca_cert("Odd-Factory", key, issuer=kit.root, path_length=0)
    if algorithm:
        cert = x509.load_der_x509_certificate(D.resign(cert, kit.root.key, algorithm))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    digest = None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    leaf = ck.make_cert(
        "hostile-odd-mid",
        leaf_key.public_key(),
        "Odd-Factory",
        signer or key,
        ca=False,
        validity=kit.validity,
        digest=digest,
    )
    return ck.pem(leaf, cert)


def _self_signed_ca(kit: Kit, key, algorithm=None, cn="Odd-Root") -> bytes:
    digest = None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    cert = ck.make_cert(cn, key.public_key(), cn, key, ca=True, validity=kit.validity, digest=digest)
    if algorithm:
        return D.resign(cert, key, algorithm)
    return ck.der(cert)


def _p192_leaf(kit: Kit) -> bytes:
    _, leaf = kit.issue("hostile-p192")
    return kit.with_mid(D.resign(leaf, kit.mid.key, spki=_p192_spki()))


def _p192_ca(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())  # the signature cannot be checked before the key is refused
    return D.resign(kit.ca_cert("P192-Root", key), key, spki=_p192_spki())


def _self_signed_device(kit: Kit, *, impersonate: bool = False, v1: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = kit.root.cn if impersonate else "hostile-self"
    cert = ck.make_cert("hostile-self", key.public_key(), issuer, key, ca=False, validity=kit.validity)
    if v1:
        tbs = D.TBS.of(cert)
        tbs.version, tbs.extensions = None, []
        return _pem_der(tbs.sign(key))
    return ck.pem(cert)


def _device_as_ca(kit: Kit, key_usage=None) -> bytes:
    """A leaf whose issuer is a genuine device certificate (CA:FALSE) of the trusted intermediate."""
    device_key, device_cert = kit.issue("hostile-parent-device", key_usage=key_usage or "default")
    _, leaf = kit.issue("hostile-child", issuer=_Signer("hostile-parent-device", device_key))
    return ck.pem(leaf, device_cert, kit.mid.cert)


def _intermediate_variant(kit: Kit, **kwargs) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ck.make_cert(
        "Odd-Factory",
        key.public_key(),
        kit.root.cn,
        kit.root.key,
        ca=kwargs.pop("ca", True),
        validity=kit.validity,
        **kwargs,
    )
    _, leaf = kit.issue("hostile-under-odd", issuer=_Signer("Odd-Factory", key))
    return ck.pem(leaf, cert)


def _pathlen_violation(kit: Kit) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    below = kit.ca_cert("Below-Factory", key, issuer=kit.mid)  # kit.mid has pathLen 0
    _, leaf = kit.issue("hostile-pathlen", issuer=_Signer("Below-Factory", key))
    return ck.pem(leaf, below, kit.mid.cert)


def _leaf_name(kit: Kit, names) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ck.make_cert(x509.Name(names), key.public_key(), kit.mid.cn, kit.mid.key, ca=False, validity=kit.validity)
    return kit.with_mid(cert)


def _leaf_validity(kit: Kit, validity) -> bytes:
    return kit.with_mid(kit.issue("hostile-time", validity=validity)[1])


def _inverted_validity(kit: Kit) -> bytes:
    """notBefore ten years ahead, notAfter yesterday (the builder refuses to write that)."""

    def utc(moment):
        return D.tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())

    _, leaf = kit.issue("hostile-inverted")
    return kit.with_mid(D.resign(leaf, kit.mid.key, validity=D.seq(utc(kit.validity[1]), utc(kit.validity[0]))))


def _leaf_serial(kit: Kit, serial: bytes) -> bytes:
    _, leaf = kit.issue("hostile-serial")
    return kit.with_mid(D.resign(leaf, kit.mid.key, serial=D.tlv(0x02, serial)))


def _mismatched_signature_algorithms(kit: Kit) -> bytes:
    _, leaf = kit.issue("hostile-mismatch")
    tbs = D.TBS.of(leaf)
    return kit.with_mid(tbs.sign(kit.mid.key, "ecdsa-sha256", outer=D.ALGORITHMS["ecdsa-sha384"][0]))


def _many_extensions(kit: Kit) -> bytes:
    _, leaf = kit.issue("hostile-many-ext")
    tbs = D.TBS.of(leaf)
    tbs.extensions += [D.extension(f"1.3.6.1.4.1.55555.{i}", D.NULL) for i in range(1400)]
    tbs.extensions.append(D.extension("1.3.6.1.4.1.55555.99999", D.NULL, critical=True))
    return tbs.sign(kit.mid.key)  # DER: the PEM would not fit under the limit with the intermediate


def _deeply_nested_extension(kit: Kit) -> bytes:
    value = D.NULL
    for _ in range(3000):
        value = D.seq(value)
    return _leaf_with_extension(kit, D.extension("2.5.29.17", value, critical=True), "hostile-nested")


def _proof(kit: Kit, signature: Callable[[bytes], bytes] | bytes, challenge: str | None = None) -> bytes:
    text, token = kit.live_challenge()
    sig = signature(token) if callable(signature) else signature
    return json.dumps({"challenge": challenge or text, "signature": base64.b64encode(sig).decode()}).encode()


def _other_device_proof(kit: Kit) -> bytes:
    other = ec.generate_private_key(ec.SECP256R1())
    from hubsim import sign

    return _proof(kit, lambda token: sign(other, token))


def _foreign_challenge(kit: Kit) -> bytes:
    token = os.urandom(180)
    return json.dumps({"challenge": base64.b64encode(token).decode(), "signature": "AAAA"}).encode()


def _truncated_challenge(kit: Kit) -> bytes:
    _text, token = kit.live_challenge()
    from hubsim import sign

    short = token[:-40]
    return json.dumps(
        {
            "challenge": base64.b64encode(short).decode(),
            "signature": base64.b64encode(sign(kit.device_key, short)).decode(),
        }
    ).encode()


# -- the table ------------------------------------------------------------------------------------------------
def _generated() -> list[Case]:
    C = Case
    cases = [
        # Malformed and truncated PEM/DER.
        C("pem-truncated-in-second-block", "pem-der", (400, "malformed_input"), lambda k: k.good_chain()[:-300]),
        C("pem-truncated-in-leaf", "pem-der", (400, "malformed_input"), lambda k: k.good_chain()[:200]),
        C("der-truncated", "pem-der", (400, "malformed_input"), lambda k: ck.der(k.device_cert)[:200]),
        C("der-trailing-garbage", "pem-der", (400, "malformed_input"), lambda k: ck.der(k.device_cert) + b"\x00" * 16),
        C("der-ber-indefinite-length", "pem-der", (400, "malformed_input"), _ber_indefinite),
        C(
            "der-signature-bit-flipped",
            "pem-der",
            (401, "chain_untrusted"),
            lambda k: k.with_mid(_flip(ck.der(k.issue("hostile-flip-sig")[1]), 5)),
        ),
        C("der-serial-bit-flipped", "pem-der", (401, "chain_untrusted"), _serial_flipped),
        C("pkcs7-bundle", "pem-der", (400, "malformed_input"), _pkcs7_bundle),
        C("cas-truncated", "pem-der", (400, "malformed_input"), lambda k: ck.der(k.stranger.cert)[:150], path="/cas"),
        C(
            "cas-two-certificates",
            "pem-der",
            (400, "too_many_certificates"),
            lambda k: ck.pem(k.stranger.cert, k.pending.cert),
            path="/cas",
        ),
        C(
            "cert-impossible-version",
            "pem-der",
            (400, "malformed_input"),
            lambda k: k.with_mid(D.resign(k.issue("hostile-v26")[1], k.mid.key, version=D.tlv(0xA0, D.integer(25)))),
        ),
        C("cert-serial-negative", "numbers", (400, "malformed_input"), lambda k: _leaf_serial(k, b"\xff\x01")),
        C("cert-serial-64-bytes", "numbers", (401, "chain_untrusted"), lambda k: _leaf_serial(k, b"\x01" * 64)),
        C("cert-validity-inverted", "numbers", (401, "cert_not_yet_valid"), _inverted_validity),
        C(
            "cert-validity-1950",
            "numbers",
            (401, "cert_expired"),
            lambda k: _leaf_validity(
                k, (dt.datetime(1950, 1, 1, tzinfo=dt.UTC), dt.datetime(1951, 1, 1, tzinfo=dt.UTC))
            ),
        ),
        C(
            "cert-validity-year-9999-start",
            "numbers",
            (401, "cert_not_yet_valid"),
            lambda k: _leaf_validity(
                k, (dt.datetime(9999, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 12, 31, tzinfo=dt.UTC))
            ),
        ),
        # Bodies far over the limits, announced and streamed (the hub must not read them).
        C("challenge-64MiB-announced", "size", (413, "upload_too_large"), stream=64 << 20),
        C("challenge-64MiB-chunked", "size", (413, "upload_too_large"), stream=64 << 20, chunked=True),
        C(
            "proof-64MiB-announced",
            "size",
            (413, "upload_too_large"),
            path="/devices/proof",
            content_type=JSON,
            stream=64 << 20,
        ),
        C("cas-64MiB-announced", "size", (413, "upload_too_large"), path="/cas", stream=64 << 20),
        C(
            "verify-64MiB-chunked",
            "size",
            (413, "upload_too_large"),
            path="/cas/{pending}/verify",
            stream=64 << 20,
            chunked=True,
        ),
        # The management credential: judged before any body is read. (Few cases present a bad one: each
        # counts against 127.0.0.1, which ten of them would lock out of the management plane.)
        C(
            "cas-64MiB-without-credential",
            "credential",
            (401, "admin_token_missing"),
            path="/cas",
            stream=64 << 20,
            anonymous=True,
        ),
        C(
            "revoke-without-credential",
            "credential",
            (401, "admin_token_missing"),
            lambda k: b"{}",
            path="/revocations",
            content_type=JSON,
            anonymous=True,
        ),
        C(
            "disable-with-basic-auth",
            "credential",
            (401, "admin_token_malformed"),
            path="/devices/d/disable",
            headers=(("Authorization", b"Basic b3BlcmF0b3I6aHVudGVyMg=="),),
        ),
        C(
            "delete-ca-with-a-wrong-token",
            "credential",
            (401, "admin_token_invalid"),
            path="/cas/{pending}",
            method="DELETE",
            headers=(("Authorization", b"Bearer " + b"A" * 43),),
        ),
        C("thousand-certificates", "size", (413, "upload_too_large"), _thousand_certificates),
        C("nine-certificates", "size", (400, "too_many_certificates"), _nine_certificates),
        C(
            "forty-copies-of-one-certificate",
            "size",
            (400, "too_many_certificates"),
            lambda k: ck.pem(k.device_cert) * 40,
        ),
        # Path building.
        C(
            "same-subject-same-key-chain",
            "pathological",
            (400, "chain_ambiguous"),
            lambda k: _same_subject_chain(k, True),
        ),
        C(
            "same-subject-different-keys",
            "pathological",
            (400, "chain_ambiguous"),
            lambda k: _same_subject_chain(k, False),
        ),
        C("same-name-seven-string-types", "pathological", (401, "chain_untrusted"), _name_variants_chain),
        C("issuer-cycle", "pathological", (401, "chain_untrusted"), _cycle_chain),
        C(
            "seven-intermediates-deep",
            "pathological",
            (401, "chain_untrusted"),
            lambda k: _deep_chain(k, trusted=True, key_factory=lambda i: ec.generate_private_key(ec.SECP256R1())),
        ),
        C(
            "six-p521-intermediates-untrusted",
            "pathological",
            (401, "chain_untrusted"),
            lambda k: _deep_chain(
                k, trusted=False, count=6, key_factory=lambda i: ec.generate_private_key(ec.SECP521R1())
            ),
        ),
        C(
            "six-rsa3072-huge-exponent-intermediates",
            "pathological",
            (400, "unsupported_algorithm"),
            lambda k: _deep_chain(k, trusted=False, count=6, key_factory=lambda i: _huge_exponent_rsa()),
        ),
        C(
            "leaf-with-1400-extensions",
            "numbers",
            (401, "chain_untrusted"),
            _many_extensions,
            content_type="application/pkix-cert",
        ),
        C("extension-nested-3000-deep", "numbers", (400, "malformed_input"), _deeply_nested_extension),
        C(
            "subject-with-two-common-names",
            "numbers",
            (400, "device_id_missing"),
            lambda k: _leaf_name(
                k, [x509.NameAttribute(NameOID.COMMON_NAME, "a"), x509.NameAttribute(NameOID.COMMON_NAME, "b")]
            ),
        ),
        C(
            "subject-without-common-name",
            "numbers",
            (400, "device_id_missing"),
            lambda k: _leaf_name(k, [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no-cn")]),
        ),
        # Private keys in every encoding.
        *[
            C(
                f"key-{kind}",
                "private-key",
                (400, "private_key_in_upload"),
                functools.partial(_private_key, kind=kind),
            )
            for kind in (
                "pkcs8-pem",
                "pkcs8-pem-encrypted",
                "pkcs1-pem",
                "pkcs1-pem-encrypted",
                "sec1-pem",
                "openssh-pem",
                "pkcs8-der",
                "pkcs8-der-ed25519",
                "pkcs8-der-ed448",
                "pkcs8-der-x25519",
                "pkcs8-der-dsa",
                "pkcs8-der-encrypted",
                "pkcs1-der",
                "sec1-der",
            )
        ],
        C(
            "key-pkcs12-with-password",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _pkcs12(k, b"pw", "pkcs12"),
        ),
        C(
            "key-pkcs12-without-password",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _pkcs12(k, None, "pkcs12 plain"),
        ),
        C(
            "key-pkcs12-costly-mac",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _pkcs12_costly_mac(k, 1 << 20),
        ),
        C("key-after-a-valid-chain", "private-key", (400, "private_key_in_upload"), _key_after_chain),
        C(
            "key-labelled-certificate-first",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _key_in_certificate_block(k, 0),
        ),
        C(
            "key-labelled-certificate-second",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _key_in_certificate_block(k, 1),
        ),
        C(
            "key-pkcs8-pem-to-cas",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _private_key(k, "pkcs8-pem"),
            path="/cas",
        ),
        C(
            "key-sec1-der-to-cas",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _private_key(k, "sec1-der"),
            path="/cas",
        ),
        C(
            "key-pkcs12-to-cas",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _pkcs12(k, b"pw", "pkcs12 to /cas"),
            path="/cas",
        ),
        C(
            "key-pkcs8-pem-to-verify",
            "private-key",
            (400, "private_key_in_upload"),
            lambda k: _private_key(k, "pkcs8-pem"),
            path="/cas/{pending}/verify",
        ),
        C("key-as-bare-base64", "private-key", (400, "malformed_input"), _bare_base64_key),
        C("key-lower-case-armour", "private-key", (400, "malformed_input"), _lowercase_pem_key),
        C("key-jwk-as-proof", "private-key", (400, "malformed_input"), _jwk, path="/devices/proof", content_type=JSON),
        # Extensions.
        C(
            "leaf-unknown-critical-extension",
            "extensions",
            (401, "chain_untrusted"),
            lambda k: _leaf_with_extension(k, D.extension("1.3.6.1.4.1.55555.1", D.NULL, critical=True)),
        ),
        C(
            "intermediate-unknown-critical-extension",
            "extensions",
            (401, "chain_untrusted"),
            lambda k: _intermediate_variant(
                k,
                extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00"), True)],
                path_length=0,
            ),
        ),
        C("leaf-duplicate-extension", "extensions", (400, "malformed_input"), _duplicate_extension_leaf),
        C("cas-duplicate-extension", "extensions", (400, "malformed_input"), _duplicate_extension_ca, path="/cas"),
        C(
            "leaf-san-x400-address",
            "extensions",
            (400, "malformed_input"),
            lambda k: _leaf_with_extension(k, D.extension("2.5.29.17", D.seq(D.tlv(0xA3, D.seq()))), "hostile-x400"),
        ),
        C("cas-san-edi-party-name", "extensions", (400, "malformed_input"), _edi_party_ca, path="/cas"),
        C("leaf-garbage-basic-constraints", "extensions", (400, "malformed_input"), _garbage_basic_constraints),
        C(
            "leaf-eku-server-auth-only",
            "extensions",
            (401, "eku_invalid"),
            lambda k: k.with_mid(k.issue("hostile-eku", eku=[ExtendedKeyUsageOID.SERVER_AUTH])[1]),
        ),
        C(
            "leaf-key-usage-without-digital-signature",
            "extensions",
            (401, "key_usage_invalid"),
            lambda k: k.with_mid(k.issue("hostile-ku", key_usage=("key_encipherment",))[1]),
        ),
        C(
            "intermediate-without-key-cert-sign",
            "extensions",
            (401, "chain_untrusted"),
            lambda k: _intermediate_variant(k, key_usage=("digital_signature",)),
        ),
        C("intermediate-path-length-exceeded", "extensions", (401, "chain_untrusted"), _pathlen_violation),
        # Algorithms outside policy.
        C("leaf-rsa1024", "algorithms", (400, "unsupported_algorithm"), lambda k: _leaf_alg(k, _rsa(1024))),
        C(
            "intermediate-rsa1024",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _intermediate_with(k, _rsa(1024)),
        ),
        C(
            "cas-rsa1024",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _self_signed_ca(k, _rsa(1024)),
            path="/cas",
        ),
        C("leaf-p192", "algorithms", (400, "unsupported_algorithm"), _p192_leaf),
        C("cas-p192", "algorithms", (400, "unsupported_algorithm"), _p192_ca, path="/cas"),
        C(
            "leaf-secp256k1",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _leaf_alg(k, ec.generate_private_key(ec.SECP256K1())),
        ),
        C(
            "intermediate-secp256k1",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _intermediate_with(k, ec.generate_private_key(ec.SECP256K1())),
        ),
        C(
            "cas-secp256k1",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _self_signed_ca(k, ec.generate_private_key(ec.SECP256K1())),
            path="/cas",
        ),
        C("leaf-ecdsa-sha1", "algorithms", (400, "unsupported_algorithm"), lambda k: _resigned_leaf(k, "ecdsa-sha1")),
        C("leaf-rsa-sha1", "algorithms", (400, "unsupported_algorithm"), lambda k: _rsa_signed_leaf(k, "rsa-sha1")),
        C("leaf-rsa-md5", "algorithms", (400, "unsupported_algorithm"), lambda k: _rsa_signed_leaf(k, "rsa-md5")),
        C(
            "intermediate-ecdsa-sha1",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _intermediate_with(k, ec.generate_private_key(ec.SECP256R1()), algorithm="ecdsa-sha1"),
        ),
        C(
            "cas-ecdsa-sha1",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _self_signed_ca(k, ec.generate_private_key(ec.SECP256R1()), "ecdsa-sha1"),
            path="/cas",
        ),
        C(
            "leaf-ed448-key",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _leaf_alg(k, ed448.Ed448PrivateKey.generate()),
        ),
        C(
            "intermediate-ed448",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _intermediate_with(k, ed448.Ed448PrivateKey.generate()),
        ),
        C(
            "cas-ed448",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _self_signed_ca(k, ed448.Ed448PrivateKey.generate()),
            path="/cas",
        ),
        C(
            "cas-ed25519",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _self_signed_ca(k, ed25519.Ed25519PrivateKey.generate()),
            path="/cas",
        ),
        C("leaf-dsa-key", "algorithms", (400, "unsupported_algorithm"), lambda k: _leaf_alg(k, _dsa())),
        C(
            "leaf-x25519-key",
            "algorithms",
            (400, "unsupported_algorithm"),
            lambda k: _leaf_alg(k, x25519.X25519PrivateKey.generate(), key_usage=("key_agreement",)),
        ),
        C(
            "leaf-signature-algorithm-mismatch",
            "algorithms",
            (401, "chain_untrusted"),
            _mismatched_signature_algorithms,
        ),
        # Self-signed device certificates, and devices posing as CAs.
        C("self-signed-device", "self-signed", (401, "chain_untrusted"), lambda k: _self_signed_device(k)),
        C("self-signed-device-v1", "self-signed", (401, "chain_untrusted"), lambda k: _self_signed_device(k, v1=True)),
        C(
            "self-signed-device-named-like-the-root",
            "self-signed",
            (401, "chain_untrusted"),
            lambda k: _self_signed_device(k, impersonate=True),
        ),
        C("leaf-issued-by-a-device", "device-as-ca", (401, "chain_untrusted"), lambda k: _device_as_ca(k)),
        C(
            "leaf-issued-by-a-device-with-key-cert-sign",
            "device-as-ca",
            (401, "chain_untrusted"),
            lambda k: _device_as_ca(k, key_usage=("digital_signature", "key_cert_sign")),
        ),
        C(
            "intermediate-with-ca-false",
            "device-as-ca",
            (401, "chain_untrusted"),
            lambda k: _intermediate_variant(k, ca=False, key_usage=("digital_signature", "key_cert_sign"), eku=None),
        ),
        C(
            "device-certificate-registered-as-ca",
            "device-as-ca",
            (400, "not_a_ca"),
            lambda k: ck.pem(k.device_cert),
            path="/cas",
        ),
        C("ca-certificate-sent-as-device", "device-as-ca", (401, "leaf_is_ca"), lambda k: ck.pem(k.mid.cert)),
        C(
            "device-from-unregistered-root",
            "device-as-ca",
            (401, "chain_untrusted"),
            lambda k: ck.pem(k.issue("hostile-stranger", issuer=k.stranger_mid)[1], k.stranger_mid.cert),
        ),
        C(
            "device-from-unverified-root",
            "device-as-ca",
            (401, "chain_untrusted"),
            lambda k: ck.pem(k.issue("hostile-pending", issuer=k.pending)[1]),
        ),
        # Proofs.
        C(
            "proof-signed-by-another-key",
            "proof",
            (401, "pop_invalid"),
            _other_device_proof,
            path="/devices/proof",
            content_type=JSON,
        ),
        C(
            "proof-4KiB-signature",
            "proof",
            (401, "pop_invalid"),
            lambda k: _proof(k, os.urandom(4096)),
            path="/devices/proof",
            content_type=JSON,
        ),
        C(
            "proof-challenge-from-another-hub",
            "proof",
            (401, "challenge_invalid"),
            _foreign_challenge,
            path="/devices/proof",
            content_type=JSON,
        ),
        C(
            "proof-challenge-truncated",
            "proof",
            (401, "challenge_invalid"),
            _truncated_challenge,
            path="/devices/proof",
            content_type=JSON,
        ),
    ]
    return cases


def _garbage_basic_constraints(kit: Kit) -> bytes:
    _, leaf = kit.issue("hostile-bad-bc")
    tbs = D.TBS.of(leaf).drop_extension("2.5.29.19")
    tbs.extensions.insert(0, D.extension("2.5.29.19", b"\x04\x03abc", critical=True))
    return kit.with_mid(tbs.sign(kit.mid.key))


def _static() -> list[Case]:
    """The data-only cases of static.json."""
    out = []
    for doc in json.loads((HERE / "static.json").read_text())["cases"]:
        body = doc.get("body", {})
        if "text" in body:
            data = body["text"].encode("utf-8")
        elif "hex" in body:
            data = bytes.fromhex(body["hex"])
        elif "repeat" in body:
            data = (body.get("prefix", "") + body["repeat"] * body["times"] + body.get("suffix", "")).encode("utf-8")
        elif "nest" in body:
            opening, middle, closing = body["nest"]
            data = (opening * body["times"] + middle + closing * body["times"]).encode("utf-8")
        elif "utf16" in body:
            data = body["utf16"].encode("utf-16")
        elif "random" in body:
            data = random.Random(body.get("seed", 1)).randbytes(body["random"])
        else:
            data = b""
        content_type = doc.get("content_type", PEM_FILE)
        if isinstance(content_type, dict):
            content_type = bytes.fromhex(content_type["hex"])
        raw = doc.get("raw")
        out.append(
            Case(
                doc["name"],
                doc["category"],
                (doc["status"], doc.get("code")),
                None,
                path=doc.get("path", "/devices/challenge"),
                method=doc.get("method", "POST"),
                content_type=content_type,
                headers=tuple((k, v.encode("latin-1")) for k, v in doc.get("headers", {}).items()),
                raw=(lambda text: lambda kit: text.encode("latin-1"))(raw) if raw else None,
                body=data,
            )
        )
    return out


def cases() -> list[Case]:
    """Every case: data first, then generated. Names are unique."""
    out = _static() + _generated()
    names = [c.name for c in out]
    assert len(names) == len(set(names)), "case names must be unique"
    return out
