"""Device chain validation: the full RFC 5280 cold path, and the cached warm path in front of it.

Cold path: ``cryptography.x509.verification``'s client verifier against the verified CAs, preceded by
the engine's own leaf checks so that common refusals get specific codes. The policy:

* anchors: verified CAs only; max chain depth ``ChainPolicy.max_chain_depth``;
* every certificate: X.509 v3, inside its validity period, RSA >= 2048 or P-256/384/521 keys
  (Ed25519 is accepted as a device key only: the WebPKI profile forbids it as a certificate
  signature), SHA-2 signatures;
* CAs: BasicConstraints CA:TRUE with pathLen honoured, keyCertSign, name constraints;
* device: CA:FALSE; KeyUsage, when present, must include digitalSignature; ExtendedKeyUsage, when
  present, must include clientAuth; subject CN is the device id. No SAN and no AuthorityKeyIdentifier
  are required: certificates made with the openssl CLI as the common tutorials show are accepted.

Warm path: every CA and intermediate on a path the cold verifier accepted is cached, keyed by the
SHA-256 of its DER, with its parsed public key and the intersection of the validity periods of the
path above it. A device whose issuer is in the cache and in its upload (or is an anchor) costs one
signature check plus byte comparisons. The warm path never refuses: whatever it cannot vouch for
goes to the cold path, which gives the verdict. Extension checks are not re-implemented: the warm
path accepts a device certificate only if its extensions (all but the per-device key identifier) are
byte-identical to those of a certificate the cold verifier already accepted under the same issuer.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from hubsim import der as rawder
from hubsim.algorithms import UnsupportedKey, key_algorithm
from hubsim.errors import AuthError
from hubsim.upload import ParsedCertificate

_UTC = _dt.timezone.utc
_DER = Encoding.DER

_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()

_SHA2_SIGNATURES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    SignatureAlgorithmOID.RSA_WITH_SHA256,
    SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
    SignatureAlgorithmOID.RSASSA_PSS,
}

# AlgorithmIdentifier DER -> how to check a signature of that kind with a cached issuer key.
_EC_SIGS = {
    bytes.fromhex("300a06082a8648ce3d040302"): ec.ECDSA(hashes.SHA256()),
    bytes.fromhex("300a06082a8648ce3d040303"): ec.ECDSA(hashes.SHA384()),
    bytes.fromhex("300a06082a8648ce3d040304"): ec.ECDSA(hashes.SHA512()),
}
_RSA_SIGS = {
    bytes.fromhex("300d06092a864886f70d01010b0500"): hashes.SHA256(),
    bytes.fromhex("300d06092a864886f70d01010c0500"): hashes.SHA384(),
    bytes.fromhex("300d06092a864886f70d01010d0500"): hashes.SHA512(),
}
_PKCS1 = padding.PKCS1v15()
MAX_DEVICE_ID_BYTES = 1024  # a device id must fit a challenge token any hub process can open
# What cryptography raises for extensions it cannot represent, besides ValueError.
_EXTENSION_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True)
class ChainPolicy:
    """Bounds and limits of device chain validation; policy as data."""

    max_upload_bytes: int = 32 * 1024
    max_certificates: int = 8       # per upload, leaf included, after dropping duplicates
    max_chain_depth: int = 6        # cryptography's limit on the built path
    cache_size: int = 4096          # cached issuers (anchors are not counted)
    profile_cache_size: int = 1024  # remembered accepted device-extension profiles
    warm: bool = True               # False sends every chain to the full verifier (the reference)


class Validated(NamedTuple):
    """A device chain that passed, and what the challenge must carry."""

    device_id: str
    leaf: bytes            # SHA-256 fingerprint of the device certificate
    spki: bytes            # its SubjectPublicKeyInfo DER
    public_key: object     # parsed once, reused for the proof in this process
    path: tuple[bytes, ...]  # fingerprints above the leaf, nearest issuer first, anchor last
    warm: bool


class _Issuer:
    """A CA certificate on an already-validated path, with what a new device under it still needs."""

    __slots__ = ("fingerprint", "subject", "public_key", "not_before", "not_after", "path", "profiles")

    def __init__(self, fingerprint, subject, public_key, not_before, not_after, path):
        self.fingerprint = fingerprint
        self.subject = subject          # raw Name DER, compared byte for byte with device issuers
        self.public_key = public_key
        self.not_before = not_before    # latest notBefore on the path up to the anchor (POSIX)
        self.not_after = not_after      # earliest notAfter on the path up to the anchor (POSIX)
        self.path = path                # own fingerprint first, anchor last
        self.profiles: set = set()      # device-extension profiles the cold verifier accepted here


class CacheStats:
    __slots__ = ("warm", "cold", "deferred", "verifier")

    def __init__(self):
        self.warm = 0       # device chains admitted through the cache
        self.cold = 0       # device chains sent to the cold path
        self.verifier = 0   # of those, chains that reached cryptography's verifier
        self.deferred = 0   # of those, cases where a cached issuer existed but the warm path declined


class ChainValidator:
    """Validates device chains against the verified CAs; owns the issuer cache."""

    def __init__(self, policy: ChainPolicy, revoked: set[bytes]):
        self.policy = policy
        self._revoked = revoked  # shared with the engine: fingerprints refused everywhere on a path
        self._anchors: dict[bytes, x509.Certificate] = {}
        self._store: Store | None = None
        self._issuers: dict[bytes, _Issuer] = {}       # validated intermediates, bounded
        self._anchor_entries: dict[bytes, _Issuer] = {}  # verified CAs, as many as are registered
        self._anchor_by_subject: dict[bytes, list[_Issuer]] = {}
        self.stats = CacheStats()
        self._now_second = -1
        self._now_text = (b"", b"")

    # -- anchors and invalidation ------------------------------------------------------------
    def set_anchors(self, anchors: dict[bytes, x509.Certificate]) -> None:
        """Replace the trust anchors (verified CAs), dropping cached paths that led to removed ones."""
        removed = set(self._anchors) - set(anchors)
        self._anchors = dict(anchors)
        self._store = Store(list(anchors.values())) if anchors else None
        self._anchor_entries = {
            fp: self._anchor_entries.get(fp) or _issuer_entry(fp, cert, None, None, (fp,))
            for fp, cert in anchors.items()
        }
        self._anchor_by_subject = {}
        for entry in self._anchor_entries.values():
            self._anchor_by_subject.setdefault(entry.subject, []).append(entry)
        for fp in removed:
            self.purge(fp)

    def purge(self, fingerprint: bytes) -> None:
        """Forget every cached intermediate whose path includes ``fingerprint`` (revoked or removed)."""
        for fp in [fp for fp, entry in self._issuers.items() if fingerprint in entry.path]:
            del self._issuers[fp]

    @property
    def cache_size(self) -> int:
        return len(self._issuers)

    # -- validation --------------------------------------------------------------------------
    def validate(self, chain: list[ParsedCertificate], now: float) -> Validated:
        leaf = chain[0]
        if leaf.fingerprint in self._revoked:
            raise AuthError("cert_revoked", "the device certificate is revoked")
        warm = self._warm(chain, now) if self.policy.warm else None
        if warm is not None:
            self.stats.warm += 1
            return warm
        self.stats.cold += 1
        return self._cold(chain, now)

    def _warm(self, chain: list[ParsedCertificate], now: float) -> Validated | None:
        # Only chains whose every certificate above the leaf is already known (a validated
        # intermediate or an anchor, matched by DER hash) are judged here.
        issuers, anchors = self._issuers, self._anchor_entries
        known = []
        for item in chain[1:]:
            entry = issuers.get(item.fingerprint) or anchors.get(item.fingerprint)
            if entry is None:
                return None
            known.append(entry)
        leaf = chain[0]
        try:
            view = rawder.view_certificate(leaf.der)
        except rawder.DerError:
            return None
        if len(known) > 1 and len({e.subject for e in known}) != len(known):
            return None  # ambiguous: the cold path refuses it with its reason
        candidates = [e for e in known if e.subject == view.issuer]
        candidates.extend(self._anchor_by_subject.get(view.issuer, ()))
        if not candidates:
            return None
        floor_now, ceil_now = self._timestamps(now)
        if not view.not_before or not (view.not_before <= floor_now and ceil_now <= view.not_after):
            self.stats.deferred += 1
            return None
        profile = _profile(view)
        revoked = self._revoked
        for issuer in candidates:
            if not issuer.not_before <= now <= issuer.not_after:
                continue
            if revoked and any(fp in revoked for fp in issuer.path):
                continue
            if profile is None or profile not in issuer.profiles:
                continue
            if not _signed_by(view, issuer.public_key):
                continue
            device_id = rawder.common_name(view.subject)
            if device_id is None or len(device_id) * 4 > MAX_DEVICE_ID_BYTES \
                    and len(device_id.encode()) > MAX_DEVICE_ID_BYTES:
                continue
            try:
                public_key = load_der_public_key(view.spki)
            except (ValueError, UnsupportedAlgorithm):
                continue
            return Validated(device_id, leaf.fingerprint, view.spki, public_key, issuer.path, True)
        self.stats.deferred += 1
        return None

    def _timestamps(self, now: float) -> tuple[bytes, bytes]:
        """``now`` rounded down and up to whole seconds as YYYYMMDDHHMMSS, to compare with raw
        certificate times (which have whole seconds): nb <= now <=> nb <= floor(now), and
        now <= na <=> ceil(now) <= na."""
        second = int(now)
        if second != self._now_second:
            self._now_second = second
            self._now_text = (_text_time(second), _text_time(second + 1))
        floor_now, ceil_now = self._now_text
        return floor_now, (floor_now if now == second else ceil_now)

    def _cold(self, chain: list[ParsedCertificate], now: float) -> Validated:
        leaf = chain[0]
        try:
            view = rawder.view_certificate(leaf.der)
        except rawder.DerError:
            view = None
        device_id = _check_leaf(leaf.certificate, view, now)
        _refuse_ambiguous(chain)
        _refuse_unsupported_keys(chain)
        if self._store is None:
            raise AuthError("chain_untrusted", "no verified CA is registered")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(_dt.datetime.fromtimestamp(now, _UTC))
            .max_chain_depth(self.policy.max_chain_depth)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        intermediates = [c.certificate for c in chain[1:]]
        self.stats.verifier += 1
        try:
            verified = verifier.verify(leaf.certificate, intermediates)
        except VerificationError as exc:
            raise _explain(exc, chain, now) from None
        path_certs = verified.chain[1:]
        path = tuple(self._fingerprint_on_path(cert, chain) for cert in path_certs)
        for fp in path:
            if fp in self._revoked:
                raise AuthError("cert_revoked", "a CA certificate on the device's path is revoked")
        if view is not None:
            self._remember(path_certs, path, view)
            spki = view.spki
        else:
            spki = _spki(leaf.certificate)
        return Validated(device_id, leaf.fingerprint, spki, load_der_public_key(spki), path, False)

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

    def _remember(self, path_certs: list[x509.Certificate], path: tuple[bytes, ...], leaf_view) -> None:
        """Cache each CA on an accepted path, unless something on it constrains leaves per name; and
        remember the device certificate's extension profile under its issuer."""
        missing = [i for i, fp in enumerate(path) if fp not in self._anchor_entries and fp not in self._issuers]
        if missing:
            views = [rawder.view_certificate(c.public_bytes(_DER)) for c in path_certs]
            if any(_constrains_leaves(v) for v in views):
                return  # per-leaf constraints: this path always takes the cold verifier
            windows = []
            not_before, not_after = float("-inf"), float("inf")
            for cert in reversed(path_certs):  # anchor first, so windows accumulate downwards
                not_before = max(not_before, cert.not_valid_before_utc.timestamp())
                not_after = min(not_after, cert.not_valid_after_utc.timestamp())
                windows.append((not_before, not_after))
            windows.reverse()
            for i in missing:
                if len(self._issuers) >= self.policy.cache_size:
                    del self._issuers[next(iter(self._issuers))]  # oldest first
                self._issuers[path[i]] = _Issuer(path[i], views[i].subject, path_certs[i].public_key(),
                                                 windows[i][0], windows[i][1], path[i:])
        entry = self._anchor_entries.get(path[0]) or self._issuers.get(path[0])
        profile = _profile(leaf_view)
        if entry is not None and profile is not None:
            if len(entry.profiles) >= self.policy.profile_cache_size:
                entry.profiles.clear()
            entry.profiles.add(profile)


def _issuer_entry(fp, cert, not_before, not_after, path) -> _Issuer:
    view = rawder.view_certificate(cert.public_bytes(_DER))
    if not_before is None:
        not_before = cert.not_valid_before_utc.timestamp()
        not_after = cert.not_valid_after_utc.timestamp()
    return _Issuer(fp, view.subject, cert.public_key(), not_before, not_after, path)




def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _spki(cert: x509.Certificate) -> bytes:
    return rawder.view_certificate(cert.public_bytes(_DER)).spki


def _profile(view: rawder.CertificateView):
    """What must be byte-identical to a cold-accepted device certificate for the warm path to vouch.

    Everything the verifier judges about a device certificate except its validity period, its
    signature and its own key identifier, which are checked per device.
    """
    if view.version != 2 or view.has_unique_ids or not view.ski_ok:
        return None
    if view.signature_algorithm != view.tbs_signature_algorithm:
        return None
    serial = view.serial
    if not 0 < len(serial) <= 20 or serial[0] & 0x80 or serial == b"\x00":
        return None
    return (view.signature_algorithm, view.spki_algorithm, len(view.spki), view.extensions)


# NameConstraints, PolicyConstraints, InhibitAnyPolicy: constraints a CA places on every leaf below it.
_LEAF_CONSTRAINT_OIDS = (b"\x06\x03\x55\x1d\x1e", b"\x06\x03\x55\x1d\x24", b"\x06\x03\x55\x1d\x36")


def _constrains_leaves(view: rawder.CertificateView) -> bool:
    return any(ext.find(oid, 0, 12) != -1 for ext in view.extensions for oid in _LEAF_CONSTRAINT_OIDS)


def _subject(item: ParsedCertificate) -> bytes:
    item.certificate  # noqa: B018 - parse (and refuse) with cryptography first
    try:
        return rawder.view_certificate(item.der).subject
    except rawder.DerError:
        return item.certificate.subject.public_bytes()


def _refuse_unsupported_keys(chain: list[ParsedCertificate]) -> None:
    """Every uploaded CA key must be one the policy allows before any signature is checked with it: an
    RSA key with a huge public exponent makes each check cost as much as signing."""
    for item in chain[1:]:
        try:
            key_algorithm(item.certificate.public_key())
        except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
            raise AuthError("unsupported_algorithm", f"CA key in the chain: {exc}") from None


def _text_time(second: int) -> bytes:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(second)).encode()


def _refuse_ambiguous(chain: list[ParsedCertificate]) -> None:
    """Two certificates with one subject make path building combinatorial (the pathological chain);
    legitimate device chains never need that, so refuse before the verifier sees them."""
    if len(chain) > 2:
        subjects = [_subject(item) for item in chain[1:]]
        if len(set(subjects)) != len(subjects):
            raise AuthError("chain_ambiguous")


def _signed_by(view: rawder.CertificateView, issuer_key) -> bool:
    try:
        if isinstance(issuer_key, ec.EllipticCurvePublicKey):
            algorithm = _EC_SIGS.get(view.signature_algorithm)
            if algorithm is None:
                return False
            issuer_key.verify(view.signature, view.tbs, algorithm)
        elif isinstance(issuer_key, rsa.RSAPublicKey):
            digest = _RSA_SIGS.get(view.signature_algorithm)
            if digest is None:
                return False
            issuer_key.verify(view.signature, view.tbs, _PKCS1, digest)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _check_leaf(cert: x509.Certificate, view: rawder.CertificateView | None, now: float) -> str:
    """The engine's own device-certificate checks, run before the verifier so refusals are specific."""
    try:
        key_algorithm(cert.public_key())
    except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
        raise AuthError("unsupported_algorithm", f"device key: {exc}") from None
    if cert.signature_algorithm_oid not in _SHA2_SIGNATURES:
        raise AuthError("unsupported_algorithm", f"device certificate signed with {cert.signature_algorithm_oid.dotted_string}")
    if now < cert.not_valid_before_utc.timestamp():
        raise AuthError("cert_not_yet_valid", "the device certificate is not valid yet")
    if now > cert.not_valid_after_utc.timestamp():
        raise AuthError("cert_expired", "the device certificate has expired")
    try:
        extensions = cert.extensions
    except _EXTENSION_ERRORS as exc:
        raise AuthError("malformed_input", f"device certificate extensions: {exc}") from None
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise AuthError("leaf_is_ca")
        if isinstance(value, x509.KeyUsage) and not value.digital_signature:
            raise AuthError("key_usage_invalid")
        if isinstance(value, x509.ExtendedKeyUsage) and ExtendedKeyUsageOID.CLIENT_AUTH not in value:
            raise AuthError("eku_invalid")
    device_id = rawder.common_name(view.subject) if view is not None else None
    if device_id is None:
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
            raise AuthError("device_id_missing")
        device_id = names[0].value
    if len(device_id.encode()) > MAX_DEVICE_ID_BYTES:
        raise AuthError("device_id_missing", f"the device id (CN) is longer than {MAX_DEVICE_ID_BYTES} bytes")
    return device_id


def _explain(exc: VerificationError, chain: list[ParsedCertificate], now: float) -> AuthError:
    """Map the verifier's message to a stable code; anything unrecognised means no trusted path."""
    text = str(exc)
    lowered = text.lower()
    if "not valid at validation time" in lowered:
        for item in chain[1:]:
            if now > item.certificate.not_valid_after_utc.timestamp():
                return AuthError("cert_expired", "a CA certificate in the chain has expired")
            if now < item.certificate.not_valid_before_utc.timestamp():
                return AuthError("cert_not_yet_valid", "a CA certificate in the chain is not valid yet")
    if ("forbidden" in lowered and "algorithm" in lowered) or "too weak" in lowered:
        return AuthError("unsupported_algorithm", "a certificate on the path uses a forbidden algorithm")
    if "eku" in lowered:
        return AuthError("eku_invalid")
    return AuthError("chain_untrusted", f"no valid path to a verified CA ({text.split(' (encountered')[0]})")
