"""Device chain validation: the full RFC 5280 cold path, and two caches in front of it.

The verdict on a device chain is split by what it depends on:

* **the path above the device** (every CA up to a verified CA) is the same for every device under one
  issuer: the cold path proves it once and the issuer cache keeps it, keyed by the SHA-256 of each CA's
  DER, with the intersection of the validity periods up to the anchor;
* **the device certificate itself** is judged for every device, on both paths, by the same code:
  :func:`check_device` (the engine's own rules, with specific refusal codes) and cryptography's client
  verifier, which on the warm path has the cached issuer as its only anchor (docs/design.md);
* **a device seen before**: the device cache memoises the whole verdict, keyed by the SHA-256 of its
  DER, for as long as the rest of the upload, the clock and the registry still agree.

So that the verdict never depends on what was cached, both paths compare time in whole seconds rounded
down (as the verifier does), require the upload to carry every certificate below the verified CA (the hub
never fills gaps), and refuse two certificates with one subject above the device (``chain_ambiguous``).
The warm paths never refuse: what they cannot vouch for, and any path with name or policy constraints,
goes to the cold path for the verdict. The policy (README, "Cold path") is cryptography's client verifier
with two relaxations, no SAN and no AuthorityKeyIdentifier required, so that certificates made with the
openssl CLI as the common tutorials show are accepted.
"""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from hubsim.algorithms import UnsupportedKey, key_algorithm
from hubsim.errors import AuthError
from hubsim.upload import ParsedCertificate

_UTC = _dt.UTC

_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()

_SHA2_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSASSA_PSS,
    }
)
# Extensions by which a CA constrains every leaf below it by name or policy: such paths always go cold.
_BASIC_CONSTRAINTS, _KEY_USAGE = ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE
_EXTENDED_KEY_USAGE = ExtensionOID.EXTENDED_KEY_USAGE
_LEAF_CONSTRAINTS = (ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.POLICY_CONSTRAINTS, ExtensionOID.INHIBIT_ANY_POLICY)
MAX_DEVICE_ID_BYTES = 1024  # a device id must fit a challenge token any hub process can open
# What cryptography raises for extensions or names it cannot represent.
_DECODE_ERRORS = (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True)
class ChainPolicy:
    """Bounds and limits of device chain validation; policy as data."""

    max_upload_bytes: int = 32 * 1024
    max_certificates: int = 8  # per upload, leaf included, after dropping duplicates
    max_chain_depth: int = 6  # cryptography's limit on the built path
    cache_size: int = 4096  # cached issuers (anchors are not counted)
    device_cache_size: int = 65_536  # admitted devices remembered for reconnects (memory: docs/design.md)
    warm: bool = True  # False sends every chain to the full verifier (the reference)


class Validated(NamedTuple):
    """A device chain that passed, and what the challenge must carry."""

    device_id: str
    leaf: bytes  # SHA-256 fingerprint of the device certificate
    spki: bytes  # its SubjectPublicKeyInfo DER
    public_key: object  # parsed once, reused for the proof in this process
    path: tuple[bytes, ...]  # fingerprints above the leaf, nearest issuer first, anchor last
    warm: bool  # True when a cache answered (issuer or device)


class _Issuer:
    """A CA certificate on a path the cold path accepted: what any device under it still needs."""

    __slots__ = (
        "_second",
        "_store",
        "_verifier",
        "alive",
        "certificate",
        "distinct",
        "fingerprint",
        "members",
        "not_after",
        "not_before",
        "path",
        "required",
        "subject",
    )

    def __init__(
        self,
        fingerprint: bytes,
        certificate: x509.Certificate,
        subject: bytes,
        window: tuple[int, int],
        path: tuple[bytes, ...],
        subjects: tuple[bytes, ...],
    ):
        self.fingerprint = fingerprint
        self.certificate = certificate
        self.subject = subject  # raw Name DER
        self.not_before, self.not_after = window  # latest notBefore / earliest notAfter up to the anchor
        self.path = path  # own fingerprint first, anchor last
        self.members = frozenset(path)  # what an upload through this issuer may hold
        self.required = frozenset(path[:-1])  # what it must hold (completeness)
        self.distinct = len(set(subjects)) == len(subjects)
        self.alive = True  # False once revoked, removed, evicted or purged
        self._store = Store([certificate])
        self._verifier: ClientVerifier | None = None
        self._second = None

    def verifier(self, second: int, max_depth: int) -> ClientVerifier:
        """cryptography's client verifier with this CA as its only anchor, for one second of time."""
        if second != self._second:
            self._verifier = _build_verifier(self._store, second, max_depth)
            self._second = second
        return self._verifier


class _Device(NamedTuple):
    validated: Validated
    issuer: _Issuer
    not_before: int  # the device's and its path's validity intersected
    not_after: int


class CacheStats:
    __slots__ = ("cold", "deferred", "reconnect", "unknown", "verifier", "warm")

    def __init__(self):
        self.warm = 0  # first sight of a device, admitted through the issuer cache
        self.reconnect = 0  # admitted through the device cache
        self.cold = 0  # sent to the cold path
        self.verifier = 0  # of those, chains that reached the full verifier
        self.deferred = 0  # of the cold ones, those the warm path judged and could not vouch for
        self.unknown = 0  # of the cold ones, those whose upload held a certificate never validated


def _build_verifier(store: Store, second: int, max_depth: int) -> ClientVerifier:
    return (
        PolicyBuilder()
        .store(store)
        .time(_dt.datetime.fromtimestamp(second, _UTC))
        .max_chain_depth(max_depth)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )


class ChainValidator:
    """Validates device chains against the verified CAs; owns the issuer and device caches."""

    def __init__(self, policy: ChainPolicy, revoked: set[bytes]):
        self.policy = policy
        self._revoked = revoked  # shared with the engine: fingerprints refused everywhere on a path
        self._anchors: dict[bytes, x509.Certificate] = {}
        self._store: Store | None = None
        self._issuers: dict[bytes, _Issuer] = {}  # validated intermediates, bounded, oldest first
        self._anchor_entries: dict[bytes, _Issuer] = {}  # verified CAs, as many as are registered
        self._anchor_by_subject: dict[bytes, list[_Issuer]] = {}
        self._devices: OrderedDict[bytes, _Device] = OrderedDict()
        self.stats = CacheStats()

    # -- anchors and invalidation ------------------------------------------------------------
    def set_anchors(self, anchors: dict[bytes, x509.Certificate]) -> None:
        """Replace the trust anchors (verified CAs), dropping cached paths that led to removed ones."""
        removed = set(self._anchors) - set(anchors)
        for fp in removed:
            if fp in self._anchor_entries:
                self._anchor_entries[fp].alive = False
        self._anchors = dict(anchors)
        self._store = Store(list(anchors.values())) if anchors else None
        self._anchor_entries = {
            fp: self._anchor_entries.get(fp) or _anchor_entry(fp, cert) for fp, cert in anchors.items()
        }
        self._anchor_by_subject = {}
        for entry in self._anchor_entries.values():
            self._anchor_by_subject.setdefault(entry.subject, []).append(entry)
        for fp in removed:
            self.purge(fp)

    def purge(self, fingerprint: bytes) -> None:
        """Forget every cached path that includes ``fingerprint`` (revoked or removed); the device cache
        entries below them die with their issuer entry."""
        for fp in [fp for fp, entry in self._issuers.items() if fingerprint in entry.members]:
            self._issuers.pop(fp).alive = False
        anchor = self._anchor_entries.get(fingerprint)
        if anchor is not None:
            anchor.alive = False  # a revoked CA stays registered but admits nobody
        self._devices.pop(fingerprint, None)

    @property
    def cache_size(self) -> int:
        return len(self._issuers)

    @property
    def device_cache_size(self) -> int:
        return len(self._devices)

    # -- validation --------------------------------------------------------------------------
    def validate(self, chain: list[ParsedCertificate], now: float) -> Validated:
        second = int(now // 1)  # whole seconds, rounded down: the verifier's rule, on every path
        if chain[0].fingerprint in self._revoked:
            raise AuthError("cert_revoked", "the device certificate is revoked")
        if self.policy.warm:
            known = self._devices.get(chain[0].fingerprint)
            if known is not None and self._still_holds(known, chain, second):
                self.stats.reconnect += 1
                return known.validated
            warm = self._warm(chain, second)
            if warm is not None:
                self.stats.warm += 1
                return warm
        self.stats.cold += 1
        return self._cold(chain, second)

    def _still_holds(self, known: _Device, chain: list[ParsedCertificate], second: int) -> bool:
        return known.issuer.alive and known.not_before <= second <= known.not_after and _fits(chain, known.issuer)

    def _warm(self, chain: list[ParsedCertificate], second: int) -> Validated | None:
        """A device seen for the first time under an issuer the cold path already proved."""
        candidates = self._candidates(chain)
        if candidates is None:
            self.stats.unknown += 1
            return None
        leaf = chain[0].certificate
        for issuer in candidates:
            if not (issuer.alive and issuer.not_before <= second <= issuer.not_after and _fits(chain, issuer)):
                continue
            try:
                device_id, public_key, window = check_device(leaf, second)
                issuer.verifier(second, self.policy.max_chain_depth).verify(leaf, [])
            except (AuthError, VerificationError):
                break  # the cold path gives the verdict and its code
            validated = Validated(device_id, chain[0].fingerprint, _spki(public_key), public_key, issuer.path, True)
            self._remember_device(validated, window, issuer)
            return validated
        self.stats.deferred += 1
        return None

    def _candidates(self, chain: list[ParsedCertificate]) -> list[_Issuer] | None:
        """The cached issuer that may vouch for the device: the lowest uploaded CA (the one whose cached
        path is longest; only it can carry every other upload on its path), or, when only the device
        certificate was uploaded, the anchors it names. The verifier checks the link either way."""
        issuers, anchors = self._issuers, self._anchor_entries
        lowest = None
        for item in chain[1:]:
            entry = issuers.get(item.fingerprint) or anchors.get(item.fingerprint)
            if entry is None:
                return None  # something never validated is in the upload: the cold path judges it
            if lowest is None or len(entry.path) > len(lowest.path):
                lowest = entry
        if lowest is not None:
            return [lowest]
        try:
            issuer_name = chain[0].certificate.issuer.public_bytes()
        except _DECODE_ERRORS:
            return []
        return list(self._anchor_by_subject.get(issuer_name, ()))

    def _cold(self, chain: list[ParsedCertificate], second: int) -> Validated:
        leaf = chain[0].certificate
        device_id, public_key, window = check_device(leaf, second)
        _refuse_ambiguous(chain)
        _refuse_unsupported_keys(chain)
        if self._store is None:
            raise AuthError("chain_untrusted", "no verified CA is registered")
        verifier = _build_verifier(self._store, second, self.policy.max_chain_depth)
        intermediates = [c.certificate for c in chain[1:]]
        self.stats.verifier += 1
        try:
            verified = verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            raise _explain(exc, chain, second) from None
        path_certs = verified.chain[1:]
        path = tuple(self._fingerprint_on_path(cert, chain) for cert in path_certs)
        for fp in path:
            if fp in self._revoked:
                raise AuthError("cert_revoked", "a CA certificate on the device's path is revoked")
        validated = Validated(device_id, chain[0].fingerprint, _spki(public_key), public_key, path, False)
        if self.policy.warm:
            issuer = self._remember_path(path_certs, path)
            if issuer is not None:
                self._remember_device(validated, window, issuer)
        return validated

    def _fingerprint_on_path(self, cert: x509.Certificate, chain: list[ParsedCertificate]) -> bytes:
        """The SHA-256 of a certificate the verifier put on the path: an upload or an anchor, matched by
        equality (a DER comparison) rather than by re-encoding and hashing it."""
        for item in chain[1:]:
            if item.certificate == cert:
                return item.fingerprint
        for fp, anchor in self._anchors.items():
            if anchor == cert:
                return fp
        return _fingerprint(cert)

    def _remember_path(self, path_certs: list[x509.Certificate], path: tuple[bytes, ...]) -> _Issuer | None:
        """Cache each CA on an accepted path, unless something on it constrains leaves by name or policy.
        Returns the device's issuer entry, or None when the path is not cached."""
        entry = self._issuers.get(path[0]) or self._anchor_entries.get(path[0])
        if entry is not None and entry.path == path:
            return entry
        try:
            if any(ext.oid in _LEAF_CONSTRAINTS for cert in path_certs for ext in cert.extensions):
                return None
            subjects = tuple(cert.subject.public_bytes() for cert in path_certs)
        except _DECODE_ERRORS:
            return None
        anchor = self._anchor_entries.get(path[-1])
        if anchor is None:
            return None
        not_before, not_after = anchor.not_before, anchor.not_after
        made: _Issuer | None = anchor if len(path) == 1 else None
        for i in range(len(path) - 2, -1, -1):  # downwards from the anchor, so windows accumulate
            cert = path_certs[i]
            not_before = max(not_before, _seconds(cert.not_valid_before_utc))
            not_after = min(not_after, _seconds(cert.not_valid_after_utc))
            made = self._issuers.get(path[i])
            if made is None or made.path != path[i:]:
                made = _Issuer(path[i], cert, subjects[i], (not_before, not_after), path[i:], subjects[i:])
                if len(self._issuers) >= self.policy.cache_size:
                    oldest = next(iter(self._issuers))
                    self._issuers.pop(oldest).alive = False
                self._issuers[path[i]] = made
        return made

    def _remember_device(self, validated: Validated, window: tuple[int, int], issuer: _Issuer) -> None:
        """``window``: the device certificate's own validity in whole seconds, as check_device read it."""
        devices = self._devices
        if len(devices) >= self.policy.device_cache_size:
            devices.popitem(last=False)
        not_before, not_after = max(issuer.not_before, window[0]), min(issuer.not_after, window[1])
        devices[validated.leaf] = _Device(validated._replace(warm=True), issuer, not_before, not_after)


def _fits(chain: list[ParsedCertificate], issuer: _Issuer) -> bool:
    """The upload carries the whole path below the anchor, nothing else, and (as the cold path requires)
    no two certificates above the device with one subject."""
    uploaded = {item.fingerprint for item in chain[1:]}
    if not (issuer.required <= uploaded <= issuer.members):
        return False
    return issuer.distinct or len(chain) <= 2


def _anchor_entry(fp: bytes, cert: x509.Certificate) -> _Issuer:
    window = (_seconds(cert.not_valid_before_utc), _seconds(cert.not_valid_after_utc))
    subject = cert.subject.public_bytes()
    return _Issuer(fp, cert, subject, window, (fp,), (subject,))


def _seconds(moment: _dt.datetime) -> int:
    return int(moment.timestamp() // 1)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _spki(public_key) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _subject(item: ParsedCertificate) -> bytes:
    try:
        return item.certificate.subject.public_bytes()
    except _DECODE_ERRORS:
        raise AuthError("malformed_input", "a certificate in the chain has an unreadable subject") from None


def _refuse_unsupported_keys(chain: list[ParsedCertificate]) -> None:
    """Every uploaded CA key must be one the policy allows before any signature is checked with it: an
    RSA key with a huge public exponent makes each check cost as much as signing."""
    for item in chain[1:]:
        try:
            key_algorithm(item.certificate.public_key())
        except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
            raise AuthError("unsupported_algorithm", f"CA key in the chain: {exc}") from None


def _refuse_ambiguous(chain: list[ParsedCertificate]) -> None:
    """Two certificates with one subject make path building combinatorial (the pathological chain);
    legitimate device chains never need that, so refuse before the verifier sees them."""
    if len(chain) > 2:
        subjects = [_subject(item) for item in chain[1:]]
        if len(set(subjects)) != len(subjects):
            raise AuthError("chain_ambiguous")


def check_device(cert: x509.Certificate, second: int) -> tuple[str, object, tuple[int, int]]:
    """The engine's own device-certificate rules, on every path, before the verifier: they give common
    refusals specific codes and add what the verifier does not check (RSA exponent bounds, the device
    id). Returns the device id, the parsed public key and the validity window in whole seconds."""
    try:
        public_key = cert.public_key()
        key_algorithm(public_key)
    except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
        raise AuthError("unsupported_algorithm", f"device key: {exc}") from None
    if cert.serial_number <= 0:
        raise AuthError("malformed_input", "the device certificate's serial number is not positive (RFC 5280 4.1.2.2)")
    if cert.signature_algorithm_oid not in _SHA2_SIGNATURES:
        raise AuthError(
            "unsupported_algorithm", f"device certificate signed with {cert.signature_algorithm_oid.dotted_string}"
        )
    not_before, not_after = _seconds(cert.not_valid_before_utc), _seconds(cert.not_valid_after_utc)
    if second < not_before:
        raise AuthError("cert_not_yet_valid", "the device certificate is not valid yet")
    if second > not_after:
        raise AuthError("cert_expired", "the device certificate has expired")
    try:
        extensions = cert.extensions
    except _DECODE_ERRORS as exc:
        raise AuthError("malformed_input", f"device certificate extensions: {exc}") from None
    for ext in extensions:  # by OID, which fixes the value's type: cheaper than isinstance on ABCs
        oid = ext.oid
        if oid == _BASIC_CONSTRAINTS:
            if ext.value.ca:
                raise AuthError("leaf_is_ca")
        elif oid == _KEY_USAGE:
            if not ext.value.digital_signature:
                raise AuthError("key_usage_invalid")
        elif oid == _EXTENDED_KEY_USAGE and ExtendedKeyUsageOID.CLIENT_AUTH not in ext.value:
            raise AuthError("eku_invalid")
    try:
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        device_id = names[0].value if len(names) == 1 else None
    except _DECODE_ERRORS:
        raise AuthError("device_id_invalid") from None
    if not isinstance(device_id, str) or not device_id:
        raise AuthError("device_id_missing")
    try:
        size = len(device_id.encode())
    except UnicodeEncodeError:
        raise AuthError("device_id_invalid") from None
    if size > MAX_DEVICE_ID_BYTES:
        raise AuthError("device_id_missing", f"the device id (CN) is longer than {MAX_DEVICE_ID_BYTES} bytes")
    return device_id, public_key, (not_before, not_after)


def _explain(exc: VerificationError, chain: list[ParsedCertificate], second: int) -> AuthError:
    """Map the verifier's message to a stable code; anything unrecognised means no trusted path."""
    text = str(exc)
    lowered = text.lower()
    if "not valid at validation time" in lowered:
        for item in chain[1:]:
            if second > _seconds(item.certificate.not_valid_after_utc):
                return AuthError("cert_expired", "a CA certificate in the chain has expired")
            if second < _seconds(item.certificate.not_valid_before_utc):
                return AuthError("cert_not_yet_valid", "a CA certificate in the chain is not valid yet")
    if ("forbidden" in lowered and "algorithm" in lowered) or "too weak" in lowered:
        return AuthError("unsupported_algorithm", "a certificate on the path uses a forbidden algorithm")
    if "eku" in lowered:
        return AuthError("eku_invalid")
    return AuthError("chain_untrusted", f"no valid path to a verified CA ({text.split(' (encountered')[0]})")


__all__ = ["MAX_DEVICE_ID_BYTES", "CacheStats", "ChainPolicy", "ChainValidator", "Validated", "check_device"]
