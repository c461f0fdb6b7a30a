"""The fleet's device certificate template: one certificate made by ``CertificateBuilder`` and cut at its
per-device fields, so that each device's certificate is spliced, not built: building each would roughly
double what generating a device costs (docs/design.md).

Every per-device field has a fixed length -- the device id ``f"{prefix}{index:0{width}d}"``, a 16-byte
serial (8-byte fleet id + 8-byte big-endian index, first byte 0x40..0x7f), the subject public key and the
SubjectKeyIdentifier (SHA-1 of the public key bit string), and with a SubjectAlternativeName the id
digits inside each name -- so splicing re-encodes no DER. The issuing custodian signs the spliced TBS;
with deterministic signing the result is byte-identical to what ``CertificateBuilder`` makes for the same
fields (the tests check this).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devicekit.fleet.layout import DER, UNCOMPRESSED, X962, b64, unb64
from devicekit.pki import CURVES, generate_key
from hubsim import der_header, read_der_header

__all__ = [
    "SAN_DNS_SUFFIX",
    "SAN_KINDS",
    "SAN_URI_PREFIX",
    "Template",
    "check_san",
    "new_fleet_id",
    "public_bits",
    "san_names",
]


def new_fleet_id(seed: bytes | None) -> bytes:
    raw = bytearray(os.urandom(8) if seed is None else hmac.digest(seed, b"fleet-id", "sha256")[:8])
    raw[0] = (raw[0] & 0x3F) | 0x40  # positive, no leading zero: the DER INTEGER is always 16 bytes
    return bytes(raw)


def public_bits(alg: str, public_key) -> bytes:
    """The subjectPublicKey BIT STRING contents (what the SKI hashes)."""
    if alg in CURVES:
        return public_key.public_bytes(X962, UNCOMPRESSED)
    if alg == "ed25519":
        return public_key.public_bytes_raw()
    return public_key.public_bytes(DER, serialization.PublicFormat.PKCS1)


SAN_KINDS = ("dns", "uri", "both")
SAN_DNS_SUFFIX = ".devices.example"  # a reserved name (RFC 6761): no real host is ever named
SAN_URI_PREFIX = "urn:certstorm:device:"


def check_san(kind: str | None) -> str | None:
    if kind is not None and kind not in SAN_KINDS:
        raise ValueError(f"unknown SAN kind {kind!r}; choose one of {', '.join(SAN_KINDS)}")
    return kind


def san_names(kind: str | None, device_id: str) -> list[x509.GeneralName]:
    """The per-device SubjectAlternativeName of a ``--san`` fleet: the device's own DNS name and/or URI,
    each holding the device id (so the id digits are spliced there too)."""
    if check_san(kind) is None:
        return []
    names: list[x509.GeneralName] = []
    if kind in ("dns", "both"):
        names.append(x509.DNSName(device_id + SAN_DNS_SUFFIX))
    if kind in ("uri", "both"):
        names.append(x509.UniformResourceIdentifier(SAN_URI_PREFIX + device_id))
    return names


class Template:
    """A device certificate cut at its per-device fields: index (serial tail), id digits (in the CN and in
    every SAN name), public key, SKI. ``fields`` names them in TBS order; "digits" may occur more than once."""

    FIELDS = ("serial", "digits", "public", "ski")  # a fleet without SAN (and every fleet.json without "fields")

    def __init__(
        self, pieces: list[bytes], lengths: dict[str, int], signature_algorithm: bytes, fields: tuple[str, ...] = FIELDS
    ):
        fields = tuple(fields)
        if sorted(set(fields)) != sorted(self.FIELDS) or any(fields.count(f) != 1 for f in ("serial", "public", "ski")):
            raise ValueError(
                f"a fleet template splices {', '.join(self.FIELDS)} (digits possibly more than once), "
                f"got {list(fields)}"
            )
        if len(pieces) != len(fields) + 1:
            raise ValueError("a fleet template has one fixed piece more than it has fields")
        self.pieces = pieces
        self.lengths = lengths
        self.signature_algorithm = signature_algorithm
        self.fields = fields
        self.tbs_length = sum(map(len, pieces)) + sum(lengths[f] for f in fields)

    @classmethod
    def build(cls, issuer, alg: str, fleet_id: bytes, prefix: str, width: int, san: str | None = None) -> Template:
        sample = generate_key(alg)
        public = public_bits(alg, sample.public_key())
        index = 10**width - 1
        digits = f"{index:0{width}d}".encode("ascii")
        device_id = prefix.encode("utf-8") + digits
        serial = fleet_id + index.to_bytes(8, "big")
        names = san_names(san, device_id.decode("utf-8"))
        cert = issuer.sign_device(
            device_id.decode("utf-8"), sample.public_key(), serial=int.from_bytes(serial, "big"), san=names
        )
        tbs = cert.tbs_certificate_bytes
        cn_tlv = der_header(0x0C, len(device_id)) + device_id

        def locate(needle: bytes, what: str) -> int:
            at = tbs.find(needle)
            if at < 0 or tbs.find(needle, at + 1) >= 0:
                raise RuntimeError(f"template {what} is not unique in the TBS; cannot splice")
            return at

        spots = [
            (locate(der_header(0x02, 16) + serial, "serial") + 2 + 8, 8, "serial"),
            (locate(cn_tlv, "subject CN") + len(cn_tlv) - width, width, "digits"),
            (locate(public, "public key"), len(public), "public"),
            (locate(hashlib.sha1(public).digest(), "SKI"), 20, "ski"),
        ]
        for name in names:  # the id digits inside each SAN name, found by the whole name around them
            text = name.value.encode("ascii")
            end = text.index(device_id) + len(device_id)
            spots.append((locate(text, "SAN name") + end - width, width, "digits"))
        spots.sort()
        pieces, pos = [], 0
        for at, length, _ in spots:
            if at < pos:
                raise RuntimeError("template fields overlap")
            pieces.append(tbs[pos:at])
            pos = at + length
        pieces.append(tbs[pos:])
        der = cert.public_bytes(DER)
        hdr, _ = read_der_header(der, 0)
        start = hdr + len(tbs)
        alg_hdr, alg_len = read_der_header(der, start)
        template = cls(
            pieces,
            {name: length for _, length, name in spots},
            der[start : start + alg_hdr + alg_len],
            tuple(name for _, _, name in spots),
        )
        if template.certificate(index, digits, public, cert.signature) != der:
            raise RuntimeError("re-spliced template differs from the CertificateBuilder original")
        return template

    def tbs(self, index: int, digits: bytes, public: bytes) -> bytes:
        p = self.pieces
        if self.fields == self.FIELDS:  # the common shape, without the general loop below
            return b"".join(
                (p[0], index.to_bytes(8, "big"), p[1], digits, p[2], public, p[3], hashlib.sha1(public).digest(), p[4])
            )
        values = {
            "serial": index.to_bytes(8, "big"),
            "digits": digits,
            "public": public,
            "ski": hashlib.sha1(public).digest(),
        }
        parts = [p[0]]
        for field, piece in zip(self.fields, p[1:]):
            parts += (values[field], piece)
        return b"".join(parts)

    def wrap(self, tbs: bytes, signature: bytes) -> bytes:
        """Certificate ::= SEQUENCE { tbs, signatureAlgorithm, BIT STRING (0 unused bits + signature) }."""
        bits = der_header(0x03, len(signature) + 1) + b"\x00" + signature
        body_len = len(tbs) + len(self.signature_algorithm) + len(bits)
        return b"".join((der_header(0x30, body_len), tbs, self.signature_algorithm, bits))

    def certificate(self, index: int, digits: bytes, public: bytes, signature: bytes) -> bytes:
        return self.wrap(self.tbs(index, digits, public), signature)

    def to_json(self) -> dict:
        return {
            "pieces": [b64(p) for p in self.pieces],
            "lengths": self.lengths,
            "signature_algorithm": b64(self.signature_algorithm),
            "fields": list(self.fields),
        }

    @classmethod
    def from_json(cls, data: dict) -> Template:
        return cls(
            [unb64(p) for p in data["pieces"]],
            {k: int(v) for k, v in data["lengths"].items()},
            unb64(data["signature_algorithm"]),
            tuple(data.get("fields", cls.FIELDS)),
        )
