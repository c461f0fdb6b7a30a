"""Zero-copy views of the few certificate fields the warm path compares byte for byte.

``cryptography`` builds Python objects for names and extensions on access (about 10 µs each for a
device certificate), which alone would cost more than the signature check the warm path exists to do.
This module only *slices* DER that ``cryptography`` has already parsed successfully; it decodes
nothing but tags and lengths, and every offset is bounds-checked. It is a lookup aid, never a
verdict: whatever it cannot read plainly makes the engine take the full RFC 5280 path instead.
"""

from __future__ import annotations

from typing import NamedTuple

_OID_COMMON_NAME = b"\x06\x03\x55\x04\x03"
_OID_SKI = b"\x55\x1d\x0e"
# String types a common name may use that decode without surprises.
_TEXT_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii"}


class DerError(ValueError):
    """The bytes do not have the expected DER shape."""


def _header(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; never reads past ``end``."""
    if pos + 2 > end:
        raise DerError("truncated header")
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + 2 + count > end:
            raise DerError("unsupported length")
        start = pos + 2 + count
        length = int.from_bytes(buf[pos + 2 : start], "big")
    stop = start + length
    if stop > end:
        raise DerError("element runs past its parent")
    return tag, start, stop


class Extension(NamedTuple):
    oid: bytes          # the OID's content octets
    critical: bool
    value: bytes        # the extnValue OCTET STRING's content


class CertificateView(NamedTuple):
    """Raw slices of one certificate, all referring to the original DER bytes."""

    tbs: bytes                  # the whole TBSCertificate element, header included (what is signed)
    signature_algorithm: bytes  # outer AlgorithmIdentifier element
    tbs_signature_algorithm: bytes
    signature: bytes            # BIT STRING content without the unused-bits octet
    version: int                # 0 for v1 ... 2 for v3
    serial: bytes               # INTEGER content octets
    issuer: bytes               # Name element, header included
    subject: bytes
    spki: bytes                 # SubjectPublicKeyInfo element
    spki_algorithm: bytes       # its AlgorithmIdentifier element
    has_unique_ids: bool
    extensions: tuple[Extension, ...]


def view_certificate(der: bytes) -> CertificateView:
    """Slice a certificate into the raw fields the warm path needs; raises :class:`DerError`."""
    end = len(der)
    tag, start, stop = _header(der, 0, end)
    if tag != 0x30 or stop != end:
        raise DerError("not a single SEQUENCE")
    tag, t_start, t_stop = _header(der, start, stop)
    if tag != 0x30:
        raise DerError("no TBSCertificate")
    tbs = der[start:t_stop]
    tag, a_start, a_stop = _header(der, t_stop, stop)
    sig_alg = der[t_stop:a_stop]
    tag, s_start, s_stop = _header(der, a_stop, stop)
    if tag != 0x03 or s_stop != stop or s_start == s_stop or der[s_start] != 0:
        raise DerError("bad signature BIT STRING")
    signature = der[s_start + 1 : s_stop]

    pos = t_start
    version = 0
    tag, c_start, c_stop = _header(der, pos, t_stop)
    if tag == 0xA0:
        tag, v_start, v_stop = _header(der, c_start, c_stop)
        if tag != 0x02 or v_stop - v_start != 1:
            raise DerError("bad version")
        version = der[v_start]
        pos = c_stop
        tag, c_start, c_stop = _header(der, pos, t_stop)
    if tag != 0x02:
        raise DerError("no serial number")
    serial = der[c_start:c_stop]
    fields = []
    pos = c_stop
    for _ in range(5):  # signature algorithm, issuer, validity, subject, subjectPublicKeyInfo
        tag, c_start, c_stop = _header(der, pos, t_stop)
        if tag != 0x30:
            raise DerError("unexpected TBSCertificate field")
        fields.append((pos, c_start, c_stop))
        pos = c_stop
    tbs_sig_alg = der[fields[0][0] : fields[0][2]]
    issuer = der[fields[1][0] : fields[1][2]]
    subject = der[fields[3][0] : fields[3][2]]
    spki_pos, spki_start, spki_stop = fields[4]
    spki = der[spki_pos:spki_stop]
    _, _, alg_stop = _header(der, spki_start, spki_stop)
    spki_alg = der[spki_start:alg_stop]

    has_unique_ids = False
    extensions: list[Extension] = []
    while pos < t_stop:
        tag, c_start, c_stop = _header(der, pos, t_stop)
        if tag in (0x81, 0x82, 0xA1, 0xA2):
            has_unique_ids = True
        elif tag == 0xA3:
            extensions = _extensions(der, c_start, c_stop)
        else:
            raise DerError("unexpected trailing TBSCertificate field")
        pos = c_stop
    return CertificateView(
        tbs, sig_alg, tbs_sig_alg, signature, version, serial, issuer, subject, spki, spki_alg,
        has_unique_ids, tuple(extensions),
    )


def _extensions(der: bytes, start: int, stop: int) -> list[Extension]:
    tag, pos, end = _header(der, start, stop)
    if tag != 0x30 or end != stop:
        raise DerError("bad Extensions")
    out = []
    while pos < end:
        tag, e_start, e_stop = _header(der, pos, end)
        if tag != 0x30:
            raise DerError("bad Extension")
        tag, o_start, o_stop = _header(der, e_start, e_stop)
        if tag != 0x06:
            raise DerError("bad extension OID")
        critical = False
        tag, b_start, b_stop = _header(der, o_stop, e_stop)
        nxt = b_stop
        if tag == 0x01:
            if b_stop - b_start != 1 or der[b_start] != 0xFF:
                raise DerError("non-DER BOOLEAN")  # DER encodes FALSE by omission, TRUE as 0xFF
            critical = True
            tag, b_start, b_stop = _header(der, nxt, e_stop)
        if tag != 0x04 or b_stop != e_stop:
            raise DerError("bad extnValue")
        out.append(Extension(der[o_start:o_stop], critical, der[b_start:b_stop]))
        pos = e_stop
    return out


def common_name(name: bytes) -> str | None:
    """The single common name in a Name element, or None when absent, repeated or oddly typed."""
    tag, pos, end = _header(name, 0, len(name))
    if tag != 0x30:
        raise DerError("not a Name")
    found = None
    while pos < end:
        _, s_start, s_stop = _header(name, pos, end)  # RelativeDistinguishedName SET
        apos = s_start
        while apos < s_stop:
            _, a_start, a_stop = _header(name, apos, s_stop)  # AttributeTypeAndValue
            if name.startswith(_OID_COMMON_NAME, a_start):
                if found is not None:
                    return None
                vtag, v_start, v_stop = _header(name, a_start + len(_OID_COMMON_NAME), a_stop)
                encoding = _TEXT_TAGS.get(vtag)
                if encoding is None:
                    return None
                try:
                    found = name[v_start:v_stop].decode(encoding)
                except UnicodeDecodeError:
                    return None
            apos = a_stop
        pos = s_stop
    return found or None


def is_ski_extension(ext: Extension) -> bool:
    return ext.oid == _OID_SKI


def well_formed_octet_string(value: bytes) -> bool:
    """True when ``value`` is exactly one DER OCTET STRING (a SubjectKeyIdentifier's shape)."""
    try:
        tag, _, stop = _header(value, 0, len(value))
    except DerError:
        return False
    return tag == 0x04 and stop == len(value)
