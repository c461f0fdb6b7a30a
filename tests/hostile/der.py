"""Just enough DER to forge certificates cryptography's builder refuses to make.

The hostile corpus needs certificates no well-behaved library writes: duplicated or mangled extensions,
SHA-1 and MD5 signatures, a P-192 key taken from a fixed test vector, BER lengths, absurd serial numbers.
The approach is always the same: let cryptography build a close relative, take its TBSCertificate apart
into raw elements, change what the case needs, and sign the result again with the right issuer key
(:func:`resign`), so the only defect is the one the case is about.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)
    return tlv(0x02, raw)


def octets(content: bytes) -> bytes:
    return tlv(0x04, content)


def bits(content: bytes) -> bytes:
    return tlv(0x03, b"\x00" + content)


NULL = b"\x05\x00"
TRUE = b"\x01\x01\xff"


def extension(dotted: str, value: bytes, critical: bool = False) -> bytes:
    """One Extension element; ``value`` is the DER inside extnValue."""
    return seq(oid(dotted), *([TRUE] if critical else []), octets(value))


def element(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos`` (definite lengths only)."""
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    count = first & 0x7F
    start = pos + 2 + count
    return tag, start, start + int.from_bytes(buf[pos + 2 : start], "big")


def children(buf: bytes) -> list[bytes]:
    """The raw child elements of the constructed element ``buf``."""
    _, pos, end = element(buf)
    out = []
    while pos < end:
        _, _, stop = element(buf, pos)
        out.append(buf[pos:stop])
        pos = stop
    return out


# AlgorithmIdentifier elements for the signatures the corpus makes.
ALGORITHMS = {
    "ecdsa-sha256": (seq(oid("1.2.840.10045.4.3.2")), lambda k, d: k.sign(d, ec.ECDSA(hashes.SHA256()))),
    "ecdsa-sha384": (seq(oid("1.2.840.10045.4.3.3")), lambda k, d: k.sign(d, ec.ECDSA(hashes.SHA384()))),
    "ecdsa-sha1": (seq(oid("1.2.840.10045.4.1")), lambda k, d: k.sign(d, ec.ECDSA(hashes.SHA1()))),
    "rsa-sha256": (
        seq(oid("1.2.840.113549.1.1.11"), NULL),
        lambda k, d: k.sign(d, padding.PKCS1v15(), hashes.SHA256()),
    ),
    "rsa-sha1": (seq(oid("1.2.840.113549.1.1.5"), NULL), lambda k, d: k.sign(d, padding.PKCS1v15(), hashes.SHA1())),
    "rsa-md5": (seq(oid("1.2.840.113549.1.1.4"), NULL), lambda k, d: k.sign(d, padding.PKCS1v15(), hashes.MD5())),
    "ed25519": (seq(oid("1.3.101.112")), lambda k, d: k.sign(d)),
    "ed448": (seq(oid("1.3.101.113")), lambda k, d: k.sign(d)),
}


def default_algorithm(key) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa-sha384" if key.curve.name == "secp384r1" else "ecdsa-sha256"
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-sha256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "ed448"
    raise TypeError(type(key).__name__)


class TBS:
    """A TBSCertificate as a list of raw fields, to edit and sign again."""

    def __init__(self, certificate_der: bytes):
        tbs = children(certificate_der)[0]
        fields = children(tbs)
        self.version = fields.pop(0) if fields[0][0] == 0xA0 else None
        (self.serial, self.signature, self.issuer, self.validity, self.subject, self.spki, *rest) = fields
        self.extensions: list[bytes] = children(children(rest[0])[0]) if rest else []

    @classmethod
    def of(cls, certificate) -> TBS:
        return cls(certificate.public_bytes(Encoding.DER) if hasattr(certificate, "public_bytes") else certificate)

    def encode(self) -> bytes:
        fields = [self.version] if self.version is not None else []
        fields += [self.serial, self.signature, self.issuer, self.validity, self.subject, self.spki]
        if self.extensions:
            fields.append(tlv(0xA3, seq(*self.extensions)))
        return seq(*fields)

    def drop_extension(self, dotted: str) -> TBS:
        marker = oid(dotted)
        self.extensions = [e for e in self.extensions if children(e)[0] != marker]
        return self

    def sign(self, key, algorithm: str | None = None, *, outer: bytes | None = None) -> bytes:
        """The certificate DER, signed by ``key``; ``outer`` overrides the outer AlgorithmIdentifier."""
        name = algorithm or default_algorithm(key)
        identifier, signer = ALGORITHMS[name]
        self.signature = identifier
        tbs = self.encode()
        return seq(tbs, outer or identifier, bits(signer(key, tbs)))


def resign(certificate, key, algorithm: str | None = None, **changes) -> bytes:
    """``certificate`` (DER or cryptography object) with TBS fields replaced and signed by ``key``."""
    tbs = TBS.of(certificate)
    for field, value in changes.items():
        setattr(tbs, field, value)
    return tbs.sign(key, algorithm)
