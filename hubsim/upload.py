"""Turn an uploaded body into certificates, with every bound checked before any expensive work.

Order matters: byte size, then a scan for private-key material, then the number of certificates, then
parsing, then duplicate removal. A refused upload is dropped on the floor: nothing from it is kept,
and error messages never quote it.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_der_private_key

from hubsim.encoding import PEM_BEGIN, PEM_END, read_der_header
from hubsim.errors import AuthError

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----(.*?)-----END \1-----", re.DOTALL)
_PRIVATE_KEY_MARKERS = (b"PRIVATE KEY-----", b"BEGIN PKCS12", b"BEGIN PKCS #12")
# PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo { contentType pkcs7-data | pkcs7-signedData ...
_PKCS7_DATA_OIDS = (b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01", b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02")


class ParsedCertificate:
    """One uploaded certificate. Parsing is deferred: the warm path recognises intermediates by the
    SHA-256 of their DER and never needs to parse them again."""

    __slots__ = ("_certificate", "der", "fingerprint")

    def __init__(self, der: bytes, fingerprint: bytes, certificate: x509.Certificate | None = None):
        self.der = der
        self.fingerprint = fingerprint  # SHA-256 of the DER
        self._certificate = certificate

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate; raises ``malformed_input`` or ``private_key_in_upload``."""
        if self._certificate is None:
            self._certificate = _load(self.der)
        return self._certificate


_SHA256 = hashlib.sha256()  # copied per use: skips OpenSSL's per-call digest lookup


def fingerprint(der: bytes) -> bytes:
    h = _SHA256.copy()
    h.update(der)
    return h.digest()


def read_certificates(
    data: bytes | Sequence[bytes], *, max_bytes: int, max_certificates: int
) -> list[ParsedCertificate]:
    """Certificates from a PEM bundle, a single DER certificate, or a list of DER certificates.

    Order is kept (the leaf first); exact duplicates are dropped. The first certificate is parsed
    at once; the others when someone asks. Raises :class:`AuthError`.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if len(data) > max_bytes:
            raise AuthError("upload_too_large", f"upload is {len(data)} bytes; the limit is {max_bytes}")
        ders = _split_body(data, max_certificates)
    else:
        items = list(data)
        if sum(len(item) for item in items) > max_bytes:
            raise AuthError("upload_too_large", f"upload exceeds {max_bytes} bytes")
        if len(items) > 2 * max_certificates:
            raise AuthError("too_many_certificates", f"at most {max_certificates} certificates per upload")
        ders = [item if type(item) is bytes else bytes(item) for item in items]
    if not ders:
        raise AuthError("malformed_input", "no certificate in the upload")

    parsed: list[ParsedCertificate] = []
    seen: set[bytes] = set()
    for der in ders:
        fp = fingerprint(der)
        if fp in seen:
            continue
        seen.add(fp)
        parsed.append(ParsedCertificate(der, fp))
    if len(parsed) > max_certificates:
        raise AuthError("too_many_certificates", f"at most {max_certificates} certificates per upload")
    parsed[0].certificate  # noqa: B018 - the leaf is always needed; refuse a bad one now
    return parsed


_BEGIN = PEM_BEGIN
_END = PEM_END


def _split_body(data: bytes, max_certificates: int) -> list[bytes]:
    if any(marker in data for marker in _PRIVATE_KEY_MARKERS):
        raise AuthError("private_key_in_upload")
    begins = data.count(b"-----BEGIN")
    if not begins:
        return [data]  # a single DER object
    if begins > 2 * max_certificates:
        raise AuthError("too_many_certificates", f"at most {max_certificates} certificates per upload")
    if data.count(_BEGIN) != begins:
        label = _PEM_BLOCK.search(data)
        what = repr(label.group(1).decode()) if label and label.group(1) != b"CERTIFICATE" else "a non-certificate"
        raise AuthError("malformed_input", f"unexpected PEM block {what}; only CERTIFICATE is accepted")
    # Split on the markers instead of a regular expression, which cost a large share of a warm
    # challenge (docs/design.md).
    ders = []
    for part in data.split(_BEGIN)[1:]:
        end = part.find(_END)
        if end < 0:
            raise AuthError("malformed_input", "PEM armour without a complete block")
        try:
            ders.append(binascii.a2b_base64(part[:end], strict_mode=False))
        except (binascii.Error, ValueError):
            raise AuthError("malformed_input", "a CERTIFICATE block is not valid base64") from None
    return ders


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        pass
    if looks_like_private_key(der):
        raise AuthError("private_key_in_upload")
    raise AuthError("malformed_input", "not a DER X.509 certificate")


def looks_like_private_key(der: bytes) -> bool:
    """True for PKCS#8 (plain or encrypted), PKCS#1, SEC1 and PKCS#12 DER. Only called on bytes that
    failed to parse as a certificate, so it costs nothing on the normal path."""
    try:
        load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        return True
    except TypeError:
        return True  # an encrypted private key: cryptography asks for the password
    except (ValueError, UnsupportedAlgorithm):
        pass
    # PKCS#12 is recognised by its shape alone: SEQUENCE { INTEGER version, SEQUENCE { OID pkcs7-data or
    # pkcs7-signedData ... } }. Parsing it would verify its MAC with the file's own iteration count,
    # which an attacker chooses.
    if len(der) < 16 or der[0] != 0x30:
        return False
    pos, _ = read_der_header(der)  # past the outer SEQUENCE's header
    if der[pos : pos + 2] != b"\x02\x01":  # a one-byte INTEGER version
        return False
    window = der[pos + 3 : pos + 3 + 20]  # the ContentInfo SEQUENCE header, then its OID
    return any(oid in window for oid in _PKCS7_DATA_OIDS)


__all__ = ["ParsedCertificate", "fingerprint", "looks_like_private_key", "read_certificates"]
