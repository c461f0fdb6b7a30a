"""Zero-copy views of the few certificate fields the warm path compares byte for byte.

``cryptography`` builds Python objects for names and extensions on access (about 10 µs each for a
device certificate), which alone would cost more than the signature check the warm path exists to do.
This module only *slices* DER that ``cryptography`` has already parsed successfully; it decodes
nothing but tags, lengths and the two validity times, and every element is checked to end inside its
parent. It is a lookup aid, never a verdict: whatever it cannot read plainly makes the engine take
the full RFC 5280 path instead.
"""

from __future__ import annotations

from typing import NamedTuple

_OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"
_OID_SKI = b"\x06\x03\x55\x1d\x0e"
# String types a common name may use that decode without surprises.
_TEXT_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii"}
SKI_MARKER = b"ski"  # stands in for a device's own key identifier in extension profiles


class DerError(ValueError):
    """The bytes do not have the expected DER shape."""


def _header(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(content start, content end) of the element at ``pos``; never past ``end``."""
    first = buf[pos + 1]
    if first < 0x80:
        start = pos + 2
        stop = start + first
    elif first == 0x81:
        start = pos + 3
        stop = start + buf[pos + 2]
    elif first == 0x82:
        start = pos + 4
        stop = start + (buf[pos + 2] << 8 | buf[pos + 3])
    else:
        raise DerError("unsupported length")
    if stop > end:
        raise DerError("element runs past its parent")
    return start, stop


class CertificateView(NamedTuple):
    """Raw slices of one certificate."""

    tbs: bytes                  # the whole TBSCertificate element, header included (what is signed)
    signature_algorithm: bytes  # outer AlgorithmIdentifier element
    tbs_signature_algorithm: bytes
    signature: bytes            # BIT STRING content without the unused-bits octet
    version: int                # 0 for v1 ... 2 for v3
    serial: bytes               # INTEGER content octets
    issuer: bytes               # Name element, header included
    not_before: bytes           # YYYYMMDDHHMMSS, or b"" when not in plain UTCTime/GeneralizedTime form
    not_after: bytes
    subject: bytes
    spki: bytes                 # SubjectPublicKeyInfo element
    spki_algorithm: bytes       # its AlgorithmIdentifier element
    has_unique_ids: bool
    extensions: tuple[bytes, ...]  # each Extension element; the SKI's replaced by SKI_MARKER
    ski_ok: bool                # the SKI, if any, is non-critical and one OCTET STRING


def view_certificate(der: bytes) -> CertificateView:
    """Slice a certificate into the raw fields the warm path needs; raises :class:`DerError`."""
    try:
        return _view(der)
    except IndexError:
        raise DerError("truncated") from None


def _view(der: bytes) -> CertificateView:
    end = len(der)
    if der[0] != 0x30:
        raise DerError("not a SEQUENCE")
    start, stop = _header(der, 0, end)
    if stop != end or der[start] != 0x30:
        raise DerError("not a single certificate")
    t_start, t_stop = _header(der, start, stop)
    tbs = der[start:t_stop]
    a_start, a_stop = _header(der, t_stop, stop)
    sig_alg = der[t_stop:a_stop]
    s_start, s_stop = _header(der, a_stop, stop)
    if der[a_stop] != 0x03 or s_stop != stop or s_start == s_stop or der[s_start] != 0:
        raise DerError("bad signature BIT STRING")
    signature = der[s_start + 1 : s_stop]

    pos = t_start
    version = 0
    if der[pos] == 0xA0:
        c_start, c_stop = _header(der, pos, t_stop)
        if c_stop - c_start != 3 or der[c_start] != 0x02 or der[c_start + 1] != 1:
            raise DerError("bad version")
        version = der[c_start + 2]
        pos = c_stop
    if der[pos] != 0x02:
        raise DerError("no serial number")
    c_start, c_stop = _header(der, pos, t_stop)
    serial = der[c_start:c_stop]
    pos = c_stop
    bounds = []
    for _ in range(5):  # signature algorithm, issuer, validity, subject, subjectPublicKeyInfo
        if der[pos] != 0x30:
            raise DerError("unexpected TBSCertificate field")
        c_start, c_stop = _header(der, pos, t_stop)
        bounds.append((pos, c_start, c_stop))
        pos = c_stop
    (sa_pos, _, sa_stop), (is_pos, _, is_stop), (_, va_start, va_stop), (su_pos, _, su_stop), \
        (pk_pos, pk_start, pk_stop) = bounds
    not_before, nb_stop = _time(der, va_start, va_stop)
    not_after, _ = _time(der, nb_stop, va_stop)
    _, alg_stop = _header(der, pk_start, pk_stop)

    has_unique_ids = False
    extensions: tuple[bytes, ...] = ()
    ski_ok = True
    while pos < t_stop:
        tag = der[pos]
        c_start, c_stop = _header(der, pos, t_stop)
        if tag == 0xA3:
            extensions, ski_ok = _extensions(der, c_start, c_stop)
        elif tag in (0x81, 0x82, 0xA1, 0xA2):
            has_unique_ids = True
        else:
            raise DerError("unexpected trailing TBSCertificate field")
        pos = c_stop
    return CertificateView(
        tbs, sig_alg, der[sa_pos:sa_stop], signature, version, serial, der[is_pos:is_stop], not_before,
        not_after, der[su_pos:su_stop], der[pk_pos:pk_stop], der[pk_start:alg_stop], has_unique_ids,
        extensions, ski_ok,
    )


def _time(der: bytes, pos: int, end: int) -> tuple[bytes, int]:
    tag = der[pos]
    start, stop = _header(der, pos, end)
    text = der[start:stop]
    if tag == 0x17 and len(text) == 13 and text[12] == 0x5A:      # YYMMDDHHMMSSZ
        return (b"19" if text[:2] >= b"50" else b"20") + text[:12], stop
    if tag == 0x18 and len(text) == 15 and text[14] == 0x5A:      # YYYYMMDDHHMMSSZ
        return text[:14], stop
    return b"", stop


def _extensions(der: bytes, start: int, stop: int) -> tuple[tuple[bytes, ...], bool]:
    if der[start] != 0x30:
        raise DerError("bad Extensions")
    pos, end = _header(der, start, stop)
    if end != stop:
        raise DerError("bad Extensions")
    out = []
    ski_ok = True
    while pos < end:
        e_start, e_stop = _header(der, pos, end)
        if der.startswith(_OID_SKI, e_start):
            # extnValue must follow the OID directly (no critical flag) and hold exactly one OCTET STRING.
            v = e_start + len(_OID_SKI)
            if der[v] != 0x04:
                ski_ok = False
            else:
                o_start, o_stop = _header(der, v, e_stop)
                if o_stop != e_stop or der[o_start] != 0x04 or _header(der, o_start, o_stop)[1] != o_stop:
                    ski_ok = False
            out.append(SKI_MARKER)
        else:
            out.append(der[pos:e_stop])
        pos = e_stop
    return tuple(out), ski_ok


def common_name(name: bytes) -> str | None:
    """The single common name in a Name element, or None when absent, repeated or oddly typed."""
    try:
        return _common_name(name)
    except IndexError:
        return None


def _common_name(name: bytes) -> str | None:
    pos, end = _header(name, 0, len(name))
    found = None
    while pos < end:
        s_start, s_stop = _header(name, pos, end)  # RelativeDistinguishedName SET
        apos = s_start
        while apos < s_stop:
            a_start, a_stop = _header(name, apos, s_stop)  # AttributeTypeAndValue
            if name.startswith(_OID_COMMON_NAME, a_start):
                if found is not None:
                    return None
                v = a_start + len(_OID_COMMON_NAME)
                encoding = _TEXT_TAGS.get(name[v])
                if encoding is None:
                    return None
                v_start, v_stop = _header(name, v, a_stop)
                try:
                    found = name[v_start:v_stop].decode(encoding)
                except UnicodeDecodeError:
                    return None
            apos = a_stop
        pos = s_stop
    return found or None
