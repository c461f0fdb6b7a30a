"""The authentication engine: CA registration with proof of possession, device challenges and proofs,
revocation and the device registry. No I/O, no clock and no randomness of its own: the HTTP service,
the benchmarks and the tests all drive this one object the same way.

State changes that must be durable (CA registered, verified or removed, revocations, disabled devices)
are returned to the caller, who persists them; :meth:`AuthEngine.restore_ca` and friends load them back.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_der_public_key
from cryptography.x509.oid import NameOID

from hubsim import challenge as tokens
from hubsim.algorithms import UnsupportedKey, key_algorithm, verify_signature
from hubsim.chain import ChainPolicy, ChainValidator, Validated
from hubsim.errors import AuthError
from hubsim.upload import fingerprint, read_certificates


@dataclass(frozen=True)
class EnginePolicy:
    chain: ChainPolicy = field(default_factory=ChainPolicy)
    challenge_ttl: float = 30.0  # seconds a device has to answer its challenge
    verification_code_ttl: float = 3600.0  # seconds a CA verification code stays usable
    max_ca_upload_bytes: int = 16 * 1024
    pending_keys: int = 65536  # parsed device keys kept between challenge and proof
    # admit only devices a provisioning service (DPS) recorded in the registry, with that certificate
    provisioned_only: bool = False


@dataclass
class CARecord:
    id: str  # SHA-256 fingerprint of the DER, lower-case hex
    der: bytes
    certificate: x509.Certificate
    subject: str
    status: str  # "unverified" or "verified"
    registered_at: float
    verification_code: str | None = None
    code_expires_at: float | None = None
    verified_at: float | None = None

    def to_json(self) -> dict:
        out = {"id": self.id, "subject": self.subject, "status": self.status}
        if self.status == "unverified":
            out["verification_code"] = self.verification_code
            out["verification_code_expires_at"] = self.code_expires_at
        return out


class Challenge(NamedTuple):
    device_id: str
    token: bytes  # what the device signs, byte for byte
    expires_at: float
    warm: bool  # True when the issuer cache answered


class Admission(NamedTuple):
    device_id: str
    ca: str  # id of the CA that admitted the device
    first_connection: bool
    challenge_expires_at: float  # when the answered challenge would have expired
    leaf: bytes = b""  # SHA-256 fingerprint of the device certificate
    path: tuple[bytes, ...] = ()  # fingerprints above it, anchor last


class DeviceRegistry(Protocol):
    def admit(self, device_id: str, ca: str, now: float) -> bool:
        """Record an authentication; True when it is the device's first."""

    def is_disabled(self, device_id: str) -> bool: ...

    def set_disabled(self, device_id: str, disabled: bool, now: float) -> None: ...

    def get(self, device_id: str) -> dict | None: ...

    def provisioned(self, device_id: str, leaf: bytes) -> bool:
        """Whether a provisioning service recorded this device here, with this certificate (SHA-256
        ``leaf``) when it recorded one; asked only under ``EnginePolicy.provisioned_only``."""


class DisabledDevices:
    """The set of disabled device ids, checked on every authentication; shared by the registries."""

    def __init__(self):
        self._disabled: set[str] = set()

    def is_disabled(self, device_id: str) -> bool:
        return device_id in self._disabled

    def set_disabled(self, device_id: str, disabled: bool, now: float) -> None:
        if disabled:
            self._disabled.add(device_id)
        else:
            self._disabled.discard(device_id)

    def provisioned(self, device_id: str, leaf: bytes) -> bool:
        return False  # nothing provisions devices here: under provisioned_only, nobody is admitted


class MemoryRegistry(DisabledDevices):
    """Device registry held in memory (the service wraps it with SQLite persistence)."""

    def __init__(self):
        super().__init__()
        self._devices: dict[str, list] = {}  # id -> [first_seen, last_auth, ca, auth_count]
        self._provisioned: dict[str, bytes | None] = {}  # id -> the device certificate's SHA-256, if given

    def provision(self, device_id: str, thumbprint: bytes | None) -> None:
        self._provisioned[device_id] = thumbprint

    def provisioned(self, device_id: str, leaf: bytes) -> bool:
        if device_id not in self._provisioned:
            return False
        recorded = self._provisioned[device_id]
        return recorded is None or hmac.compare_digest(recorded, leaf)

    def admit(self, device_id: str, ca: str, now: float) -> bool:
        row = self._devices.get(device_id)
        if row is None:
            self._devices[device_id] = [now, now, ca, 1]
            return True
        row[1] = now
        row[2] = ca
        row[3] += 1
        return False

    def get(self, device_id: str) -> dict | None:
        row = self._devices.get(device_id)
        if row is None and device_id not in self._disabled:
            return None
        first, last, ca, count = row or (None, None, None, 0)
        return {
            "device_id": device_id,
            "first_seen": first,
            "last_authenticated": last,
            "ca": ca,
            "authentications": count,
            "disabled": device_id in self._disabled,
        }

    def __len__(self) -> int:
        return len(self._devices)


class AuthEngine:
    """Everything the hub decides, as a plain object.

    ``clock()`` returns POSIX seconds; ``random(n)`` returns n random bytes; ``secret`` keys the
    challenge MAC and must be shared by every process that may see the same device's proof.
    """

    def __init__(
        self,
        *,
        secret: bytes,
        clock: Callable[[], float],
        random: Callable[[int], bytes],
        policy: EnginePolicy | None = None,
        replay_guard: tokens.ReplayGuard | None = None,
        registry: DeviceRegistry | None = None,
    ):
        if len(secret) < 32:
            raise ValueError("the challenge secret needs at least 32 bytes")
        self.policy = policy or EnginePolicy()
        self._secret = secret
        self._clock = clock
        self._random = random
        self.replay_guard = tokens.MemoryReplayGuard() if replay_guard is None else replay_guard
        self.registry = MemoryRegistry() if registry is None else registry
        self._cas: dict[str, CARecord] = {}
        self._revoked: set[bytes] = set()
        self.chains = ChainValidator(self.policy.chain, self._revoked)
        # token -> (claims, parsed device key) for challenges this process issued; bounded, and only a
        # shortcut: a token missing here is checked by its seal, as if another process had issued it.
        self._pending: dict[bytes, tuple[tokens.Token, object]] = {}
        self._nonce_pool = b""
        self._nonce_pos = 0

    # -- CA registration -----------------------------------------------------------------------
    def register_ca(self, data: bytes) -> CARecord:
        """Accept a CA certificate as *unverified* and give it a fresh verification code."""
        parsed = read_certificates(data, max_bytes=self.policy.max_ca_upload_bytes, max_certificates=1)
        if len(parsed) != 1:
            raise AuthError("malformed_input", "upload exactly one CA certificate")
        der, cert, fp = parsed[0].der, parsed[0].certificate, parsed[0].fingerprint
        now = self._clock()
        _check_ca_certificate(cert, now)
        ca_id = fp.hex()
        if ca_id in self._cas:
            raise AuthError("ca_exists")
        if fp in self._revoked:
            raise AuthError("cert_revoked", "this CA certificate has been revoked")
        try:
            subject = cert.subject.rfc4514_string()
        except ValueError as exc:
            raise AuthError("malformed_input", f"CA subject: {exc}") from None
        record = CARecord(ca_id, der, cert, subject, "unverified", now)
        self._new_code(record, now)
        self._cas[ca_id] = record
        return record

    def new_verification_code(self, ca_id: str) -> CARecord:
        record = self.get_ca(ca_id)
        if record.status == "verified":
            raise AuthError("ca_already_verified")
        self._new_code(record, self._clock())
        return record

    def _new_code(self, record: CARecord, now: float) -> None:
        # 256 random bits as 64 hex digits: the longest a CN may be (RFC 5280 ub-common-name), as AWS does.
        record.verification_code = self._random(32).hex()
        record.code_expires_at = now + self.policy.verification_code_ttl

    def verify_ca(self, ca_id: str, *, certificate: bytes | None = None, signature: bytes | None = None) -> CARecord:
        """Proof of possession: a certificate with CN = code signed by the CA's key, or a raw signature
        over the code's ASCII bytes with the CA's key. The code is consumed on success."""
        record = self.get_ca(ca_id)
        if record.status == "verified":
            raise AuthError("ca_already_verified")
        now = self._clock()
        if record.code_expires_at is None or now > record.code_expires_at:
            raise AuthError("verification_code_expired")
        code = record.verification_code or ""
        if (certificate is None) == (signature is None):
            raise AuthError("malformed_input", "give either a verification certificate or a signature")
        if certificate is not None:
            parsed = read_certificates(certificate, max_bytes=self.policy.max_ca_upload_bytes, max_certificates=1)
            if len(parsed) != 1:
                raise AuthError("malformed_input", "upload exactly one verification certificate")
            proof = parsed[0].certificate
            names = proof.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            presented = names[0].value if len(names) == 1 else ""
            if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), code.encode()):
                raise AuthError("verification_code_mismatch")
            if not proof.not_valid_before_utc.timestamp() <= now // 1 <= proof.not_valid_after_utc.timestamp():
                raise AuthError("cert_expired", "the verification certificate is outside its validity period")
            try:
                proof.verify_directly_issued_by(record.certificate)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                raise AuthError("verification_signature_invalid") from None
        else:
            if not verify_signature(record.certificate.public_key(), signature, code.encode("ascii")):
                raise AuthError("verification_signature_invalid")
        record.status = "verified"
        record.verified_at = now
        record.verification_code = None
        record.code_expires_at = None
        self._refresh_anchors()
        return record

    def remove_ca(self, ca_id: str) -> CARecord:
        record = self.get_ca(ca_id)
        del self._cas[record.id]
        self._refresh_anchors()
        return record

    def get_ca(self, ca_id: str) -> CARecord:
        record = self._cas.get(ca_id.lower()) if isinstance(ca_id, str) else None
        if record is None:
            raise AuthError("ca_not_found")
        return record

    def list_cas(self) -> list[CARecord]:
        return list(self._cas.values())

    def restore_ca(
        self,
        der: bytes,
        *,
        status: str,
        registered_at: float,
        verification_code: str | None = None,
        code_expires_at: float | None = None,
        verified_at: float | None = None,
    ) -> CARecord:
        """Load a CA the service had stored; no checks beyond parsing (it passed them when stored)."""
        cert = x509.load_der_x509_certificate(der)
        record = CARecord(
            fingerprint(der).hex(),
            der,
            cert,
            cert.subject.rfc4514_string(),
            status,
            registered_at,
            verification_code,
            code_expires_at,
            verified_at,
        )
        self._cas[record.id] = record
        self._refresh_anchors()
        return record

    def _refresh_anchors(self) -> None:
        self.chains.set_anchors(
            {bytes.fromhex(r.id): r.certificate for r in self._cas.values() if r.status == "verified"}
        )

    # -- revocation and devices ----------------------------------------------------------------
    def revoke(self, fingerprint_hex: str) -> bytes:
        """Refuse every path through this certificate (CA, intermediate or device) from now on."""
        try:
            fp = bytes.fromhex(fingerprint_hex)
        except (ValueError, TypeError):
            fp = b""
        if len(fp) != 32:
            raise AuthError("revocation_not_found", "fingerprint must be 64 hex digits (SHA-256 of the DER)")
        self._revoked.add(fp)
        self.chains.purge(fp)
        return fp

    def is_revoked(self, fp: bytes) -> bool:
        return fp in self._revoked

    def disable_device(self, device_id: str, disabled: bool = True) -> None:
        self.registry.set_disabled(device_id, disabled, self._clock())

    # -- device authentication -----------------------------------------------------------------
    def begin(self, chain: bytes | Sequence[bytes]) -> Challenge:
        """Step 1: validate the device's chain (leaf first) and issue a challenge bound to it."""
        validated, now = self._validate(chain)
        if self.registry.is_disabled(validated.device_id):
            raise AuthError("device_disabled")
        if self.policy.provisioned_only and not self.registry.provisioned(validated.device_id, validated.leaf):
            raise AuthError("device_not_provisioned")
        nonce = self._nonce()
        expires_at = now + self.policy.challenge_ttl
        claims = tokens.Token(expires_at, nonce, validated.leaf, validated.path, validated.device_id, validated.spki)
        token = tokens.seal(self._secret, claims)
        pending = self._pending
        if len(pending) >= self.policy.pending_keys:
            del pending[next(iter(pending))]
        pending[token] = (claims, validated.public_key)
        return Challenge(validated.device_id, token, expires_at, validated.warm)

    def _validate(self, chain: bytes | Sequence[bytes]) -> tuple[Validated, float]:
        """The upload read within its bounds and judged (caches included), with the time it was judged at."""
        policy = self.policy.chain
        parsed = read_certificates(chain, max_bytes=policy.max_upload_bytes, max_certificates=policy.max_certificates)
        now = self._clock()
        return self.chains.validate(parsed, now), now

    def _nonce(self) -> bytes:
        """A fresh 128-bit nonce, cut from a buffer of the injected randomness (one call per 256)."""
        if self._nonce_pos >= len(self._nonce_pool):
            self._nonce_pool = self._random(tokens.NONCE_BYTES * 256)
            self._nonce_pos = 0
        pos = self._nonce_pos
        self._nonce_pos = pos + tokens.NONCE_BYTES
        return self._nonce_pool[pos : pos + tokens.NONCE_BYTES]

    def complete(self, token: bytes, signature: bytes) -> Admission:
        """Step 2: check the device's signature over its challenge; admit it once."""
        mine = self._pending.pop(token, None) if isinstance(token, bytes) else None
        if mine is not None:
            # Byte-identical to a token this process sealed: its claims and parsed key are at hand.
            claims, public_key = mine
        else:  # issued by another process, or evicted: check the seal and parse the key
            claims = tokens.open_token(self._secret, token)
            public_key = None
        now = self._clock()
        if now > claims.expires_at:
            raise AuthError("challenge_expired")
        if public_key is None:
            try:
                public_key = load_der_public_key(claims.spki)
            except (ValueError, UnsupportedAlgorithm):
                raise AuthError("challenge_invalid") from None
        try:
            ok = verify_signature(public_key, signature, token)
        except UnsupportedKey:
            ok = False
        if not ok:
            raise AuthError("pop_invalid")
        if not self.replay_guard.claim(claims.nonce, claims.expires_at, now):
            raise AuthError("challenge_used")
        return self._admit(claims.device_id, claims.leaf, claims.path, now, claims.expires_at)

    def admit_proven(self, chain: bytes | Sequence[bytes], client_id: str) -> Admission:
        """A chain whose key possession the transport already proved (a TLS handshake's
        CertificateVerify): validate it exactly as :meth:`begin` does -- caches included -- and admit
        it as :meth:`complete` does, with no challenge. ``client_id`` is the id the device claims (an
        MQTT client id); it must be the certificate's device id."""
        validated, now = self._validate(chain)
        _check_claimed(client_id, validated.device_id)
        return self._admit(validated.device_id, validated.leaf, validated.path, now, now)

    def admit_verified(self, device_id: str, client_id: str, leaf: bytes, path: Sequence[bytes]) -> Admission:
        """A device whose chain the transport validated itself against :meth:`anchors` (leaf and path
        as SHA-256 fingerprints, anchor last): the registry, revocation and disable checks alone."""
        _check_claimed(client_id, device_id)
        now = self._clock()
        return self._admit(device_id, leaf, tuple(path), now, now)

    def anchors(self) -> list[bytes]:
        """DER of the verified CAs: what a transport that validates chains itself must trust."""
        return [r.der for r in self._cas.values() if r.status == "verified"]

    def _admit(self, device_id: str, leaf: bytes, path: Sequence[bytes], now: float, expires_at: float) -> Admission:
        """The checks every admission makes last, whatever proved the key: revocation, a CA still
        verified, the device not disabled; then the registry records it."""
        revoked = self._revoked
        if leaf in revoked or any(fp in revoked for fp in path):
            raise AuthError("cert_revoked")
        anchor = self._cas.get(path[-1].hex()) if path else None
        if anchor is None or anchor.status != "verified":
            raise AuthError("chain_untrusted", "the CA that admitted this device is no longer registered")
        registry = self.registry
        if registry.is_disabled(device_id):
            raise AuthError("device_disabled")
        if self.policy.provisioned_only and not registry.provisioned(device_id, leaf):
            raise AuthError("device_not_provisioned")
        first = registry.admit(device_id, anchor.id, now)
        return Admission(device_id, anchor.id, first, expires_at, leaf, tuple(path))

    def stats(self) -> dict:
        s = self.chains.stats
        return {
            "cas": len(self._cas),
            "revoked": len(self._revoked),
            "cache_size": self.chains.cache_size,
            "device_cache_size": self.chains.device_cache_size,
            "warm": s.warm,
            "reconnect": s.reconnect,
            "cold": s.cold,
            "deferred": s.deferred,
            "unknown": s.unknown,
            "verifier": s.verifier,
            "pending_keys": len(self._pending),
        }


def _check_claimed(client_id: str, device_id: str) -> None:
    if not hmac.compare_digest(client_id.encode("utf-8", "surrogatepass"), device_id.encode("utf-8", "surrogatepass")):
        raise AuthError("device_id_mismatch")


def _check_ca_certificate(cert: x509.Certificate, now: float) -> None:
    try:
        key_algorithm(cert.public_key())
    except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
        raise AuthError("unsupported_algorithm", f"CA key: {exc}") from None
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if digest is None or digest.name not in ("sha256", "sha384", "sha512"):
        raise AuthError("unsupported_algorithm", "CA certificates must be signed with ECDSA or RSA and SHA-2")
    if cert.version != x509.Version.v3:
        raise AuthError("not_a_ca", "CA certificates must be X.509 v3")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise AuthError("not_a_ca", "no BasicConstraints extension") from None
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise AuthError("malformed_input", f"CA extensions: {exc}") from None
    if not bc.ca:
        raise AuthError("not_a_ca", "BasicConstraints says CA:FALSE")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        # RFC 5280 lets a CA omit KeyUsage, but the verifier's CA profile requires it: such a CA could
        # never admit a device, so refuse it now rather than accept it and fail every device later.
        raise AuthError("not_a_ca", "CA certificates need a KeyUsage extension with keyCertSign") from None
    if not ku.key_cert_sign:
        raise AuthError("not_a_ca", "KeyUsage lacks keyCertSign")
    second = now // 1  # whole seconds, rounded down, as the chain verifier compares times
    if second < cert.not_valid_before_utc.timestamp():
        raise AuthError("cert_not_yet_valid", "the CA certificate is not valid yet")
    if second > cert.not_valid_after_utc.timestamp():
        raise AuthError("cert_expired", "the CA certificate has expired")


__all__ = [
    "Admission",
    "AuthEngine",
    "AuthError",
    "CARecord",
    "Challenge",
    "DeviceRegistry",
    "EnginePolicy",
    "MemoryRegistry",
]
