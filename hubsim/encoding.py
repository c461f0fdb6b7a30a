"""DER and PEM framing done by hand, where a full parse or serialisation by cryptography would cost more
than the work itself: the hub's upload checks, the fleet's certificate template and the swarm's hot path.
One writer and one reader of a DER header, one PEM wrapper: nothing else in the project frames bytes."""

from __future__ import annotations

import binascii

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
PEM_END = b"-----END CERTIFICATE-----"


def der_header(tag: int, length: int) -> bytes:
    """A definite-length DER header for ``length`` content bytes."""
    if length < 0x80:
        return bytes((tag, length))
    n = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | n)) + length.to_bytes(n, "big")


def read_der_header(der: bytes, pos: int = 0) -> tuple[int, int]:
    """(header length, content length) of the TLV at ``pos``. The caller bounds ``der``: a short input
    gives a short length, never an error."""
    first = der[pos + 1]
    if first < 0x80:
        return 2, first
    n = first & 0x7F
    return 2 + n, int.from_bytes(der[pos + 2 : pos + 2 + n], "big")


def pem_certificate(der: bytes) -> bytes:
    """One DER certificate as a PEM block (64-character lines, as ``openssl`` and cryptography write)."""
    b = binascii.b2a_base64(der, newline=False)
    return b"".join(
        (PEM_BEGIN, b"\n", b"\n".join([b[i : i + 64] for i in range(0, len(b), 64)]), b"\n", PEM_END, b"\n")
    )


__all__ = ["PEM_BEGIN", "PEM_END", "der_header", "pem_certificate", "read_der_header"]
