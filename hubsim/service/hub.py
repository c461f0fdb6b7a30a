"""One hub worker's core, transport-free: its engine and stores, the sync with the other workers, and
the device path.

The device steps (:meth:`Hub.challenge`, :meth:`Hub.proof`) take a complete body and return a
:class:`DeviceReply`; the transports put it on the wire: the HTTP front (:mod:`hubsim.service.httpapi`)
and its raw fast path (:mod:`hubsim.service.fastpath`). Nothing here logs per request, and metrics go
through the batched accumulators of :mod:`hubsim.service.metrics`. Administrative changes made by any
worker reach this one through the store's change log (:meth:`Hub.sync`).

The reply's wire format is :mod:`hubsim.service.codec`'s.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from time import perf_counter
from typing import NamedTuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import DuplicateExtension, InvalidVersion, UnsupportedGeneralNameType

from hubsim.engine import Admission, AuthEngine, EnginePolicy
from hubsim.errors import AuthError
from hubsim.service.codec import DeviceReply, decode_b64, error_reply, json_object, timing_header
from hubsim.service.credential import AdminGate, ManagementAccess
from hubsim.service.guard import SharedReplayGuard
from hubsim.service.lockout import SharedLockout
from hubsim.service.metrics import Metrics
from hubsim.service.quota import SharedTokenBucket, retry_after_header
from hubsim.service.store import SqlRegistry, Store

log = logging.getLogger("certstorm.hub")

SYNC_INTERVAL = 0.2  # seconds between change-log polls, registry and metrics flushes
TRIM_INTERVAL = 60.0
# Challenges whose parsed device key a worker keeps for a proof that comes back to it (the engine's
# shortcut past re-checking the seal and re-parsing the key). Parsed keys are not small, and the engine's
# default of 65,536 would hold that many per worker for challenges nobody answers (docs/design.md). 4,096
# covers 0.4 s from challenge to proof at 10,000 challenges/s per worker; a later proof is checked by its seal.
PENDING_KEYS = 4096


@dataclass(frozen=True)
class WorkerConfig:
    db: str
    guard_path: str
    quota_path: str | None
    quota_label: str | None
    workers_file: str  # the supervisor keeps the live worker pids here
    index: int  # this worker's slot (0-based)
    policy: EnginePolicy = field(default_factory=EnginePolicy)
    management: ManagementAccess = field(default_factory=ManagementAccess)
    lockout_path: str | None = None  # the shared table of bad credentials per address


_last_parse_report = [0.0]


def parsing_input(step, *args, **kwargs):
    """Run an engine step that parses uploaded bytes. The engine is meant to turn every defect of its
    input into an AuthError; some parse errors of cryptography (a lazily parsed subject, an invalid
    version number, an extension given twice, a SubjectAltName with an x400Address) escape it as
    ValueError, InvalidVersion, DuplicateExtension or UnsupportedGeneralNameType -- the last three are
    not ValueErrors. Those are the input's fault, so the client gets 400 ``malformed_input``
    (``unsupported_algorithm`` for UnsupportedAlgorithm) -- but each is an engine gap, so it is logged
    with its traceback (at most every 10 s per worker)."""
    try:
        return step(*args, **kwargs)
    except (ValueError, InvalidVersion, UnsupportedAlgorithm, DuplicateExtension, UnsupportedGeneralNameType) as exc:
        now = time.monotonic()
        if now - _last_parse_report[0] > 10.0:
            _last_parse_report[0] = now
            log.warning("engine let a parse error of uploaded data escape (answered 4xx)", exc_info=True)
        code = "unsupported_algorithm" if isinstance(exc, UnsupportedAlgorithm) else "malformed_input"
        raise AuthError(code, f"the upload could not be parsed: {type(exc).__name__}") from None


class TlsRefusal(NamedTuple):
    """A device refused at its MQTT CONNECT (already counted): the engine's code."""

    code: str

    @property
    def throttled(self) -> bool:
        return self.code == "throttled"


class Hub:
    """One worker's engine, stores, sync and device path. A service of the same family (DPS) subclasses
    it with its own store, registry and metrics (:attr:`store_class`, :meth:`make_registry`,
    :meth:`make_metrics`)."""

    store_class = Store

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.store = self.store_class(config.db)
        self.guard = SharedReplayGuard(config.guard_path)
        self.registry = self.make_registry()
        policy = dataclasses.replace(config.policy, pending_keys=min(config.policy.pending_keys, PENDING_KEYS))
        self.engine = AuthEngine(
            secret=self.guard.secret,
            clock=time.time,
            random=os.urandom,
            policy=policy,
            replay_guard=self.guard,
            registry=self.registry,
        )
        self.quota = SharedTokenBucket(config.quota_path) if config.quota_path else None
        self.lockout = SharedLockout(config.lockout_path) if config.lockout_path else None
        self.gate = AdminGate(config.management, self.lockout)
        self.metrics = self.make_metrics()
        self.chain_limit = config.policy.chain.max_upload_bytes
        self.ca_limit = config.policy.max_ca_upload_bytes
        self.started = time.time()
        self._generation = self.guard.generation()
        self._seq = self._load()
        self._last_trim = 0.0

    def make_registry(self):
        """The engine's device registry: the hub's is SQLite with write-behind."""
        return SqlRegistry(self.store)

    def make_metrics(self) -> Metrics:
        return Metrics(self.config.policy.challenge_ttl)

    # -- state shared with the other workers --------------------------------------------------------
    def _load(self) -> int:
        seq, cas, revoked, disabled = self.store.snapshot()
        for fp in revoked:
            self.engine.revoke(fp)
        for row in cas:
            self._restore(row)
        for device_id in disabled:
            self.engine.disable_device(device_id, True)
        return seq

    def _restore(self, row) -> None:
        _ca_id, der, status, registered_at, code, code_expires_at, verified_at = row
        self.engine.restore_ca(
            der,
            status=status,
            registered_at=registered_at,
            verification_code=code,
            code_expires_at=code_expires_at,
            verified_at=verified_at,
        )

    def apply_ca(self, ca_id: str) -> None:
        row = self.store.ca_row(ca_id)
        if row is not None:
            self._restore(row)
            return
        try:
            self.engine.remove_ca(ca_id)
        except AuthError:
            pass

    def sync(self) -> int:
        """Apply what any worker changed since the last call; returns how many changes were applied."""
        changes = self.store.changes_since(self._seq)
        for seq, kind, key in changes:
            self.apply_change(kind, key)
            self._seq = seq
        return len(changes)

    def apply_change(self, kind: str, key: str) -> None:
        """One row of the change log, made by any worker, applied to this one's engine."""
        if kind == "ca":
            self.apply_ca(key)
        elif kind == "revocation":
            self.engine.revoke(key)
        elif kind == "device":
            self.engine.disable_device(key, self.store.is_disabled(key))
        elif kind == "identity":
            self.registry.forget_identity(key)

    def changed(self) -> None:
        """After an administrative write committed: tell every worker to catch up before its next request."""
        self.guard.bump_generation()

    def housekeeping(self) -> None:
        """Run every SYNC_INTERVAL by the worker: follow the change log, flush write-behind and metrics."""
        now = time.time()
        self.sync()
        self.registry.flush()
        self.metrics.flush(now, self.engine.stats(), self.registry.pending, self.registry.lag(now))
        if self.config.index == 0 and now - self._last_trim > TRIM_INTERVAL:
            self._last_trim = now
            self.store.trim_changes(now)

    def close(self) -> None:
        """Clean stop: write everything still batched."""
        now = time.time()
        try:
            self.registry.flush()
        finally:
            self.metrics.flush(now, self.engine.stats(), self.registry.pending, 0.0)
            self.store.close()
            self.guard.close()
            for shared in (self.quota, self.lockout):
                if shared is not None:
                    shared.close()

    # -- the device path ----------------------------------------------------------------------------
    # Transport-independent: the HTTP front (httpapi.py) and its raw fast path (fastpath.py) call these
    # with a complete body and turn the DeviceReply into bytes on the wire.
    def catch_up(self) -> None:
        """Apply other workers' administrative changes if the shared generation moved (a memory read if not)."""
        generation = self.guard.generation()
        if generation != self._generation:
            self._generation = generation
            self.sync()

    def _throttled(self) -> float:
        """Seconds to wait when the connection quota is exhausted (counted), else 0.0 (a token was taken)."""
        quota = self.quota
        wait = quota.take() if quota is not None else 0.0
        if wait:
            self.metrics.throttled()
        return wait

    def throttle(self) -> DeviceReply | None:
        """The 429 reply when the connection quota is exhausted, else None (a token was taken)."""
        wait = self._throttled()
        if not wait:
            return None
        return self.refusal("challenge", AuthError("throttled"), retry_after=retry_after_header(wait))

    def refusal(
        self, step: str, exc: AuthError, chain: float = 0.0, pop: float = 0.0, retry_after: str | None = None
    ) -> DeviceReply:
        self.metrics.refused(step, exc.code)
        return error_reply(exc, timing_header(chain, pop), retry_after)

    @staticmethod
    def _timed(histogram, step, *args):
        """Run an engine step, timed into ``histogram``: ``(result, None, seconds)``, or ``(None, error,
        seconds)`` when the engine refused."""
        t0 = perf_counter()
        try:
            result, error = parsing_input(step, *args), None
        except AuthError as exc:
            result, error = None, exc
        took = perf_counter() - t0
        histogram.observe(took)
        return result, error, took

    def challenge(self, body: bytes) -> DeviceReply:
        challenge, error, took = self._timed(self.metrics.chain, self.engine.begin, body)
        if error is not None:
            return self.refusal("challenge", error, chain=took)
        self.metrics.issued(challenge.expires_at)
        out = b"".join(
            (
                b'{"device_id":',
                json.dumps(challenge.device_id).encode(),
                b',"challenge":"',
                base64.b64encode(challenge.token),
                b'","expires_at":',
                b"%.3f" % challenge.expires_at,
                b"}",
            )
        )
        return DeviceReply(200, out, timing_header(took, 0.0), None)

    def prove(self, body: bytes) -> tuple[Admission | None, DeviceReply | None, float]:
        """A proof's JSON judged by the engine (timed, counted): ``(admission, None, seconds)``, or
        ``(None, refusal, seconds)``. The hub's proof step and DPS's HTTP registration both start here."""
        try:
            doc = json_object(body)
            token = decode_b64(doc.get("challenge"), "challenge")
            signature = decode_b64(doc.get("signature"), "signature")
        except AuthError as exc:
            return None, self.refusal("proof", exc), 0.0
        admission, error, took = self._timed(self.metrics.pop, self.engine.complete, token, signature)
        if error is not None:
            return None, self.refusal("proof", error, pop=took), took
        self.metrics.admitted(admission.challenge_expires_at)  # keeps the pending-challenge gauge
        return admission, None, took

    def proof(self, body: bytes) -> DeviceReply:
        admission, refused, took = self.prove(body)
        if refused is not None:
            return refused
        out = b"".join(
            (
                b'{"device_id":',
                json.dumps(admission.device_id).encode(),
                b',"ca":"',
                admission.ca.encode(),
                b'","first_connection":',
                b"true}" if admission.first_connection else b"false}",
            )
        )
        return DeviceReply(200, out, timing_header(0.0, took), None)

    # -- the device path over TLS (mqtts.py): the handshake proved possession -----------------------
    def admit_proven(self, client_id: str, chain: list[bytes]):
        """``cached`` mode: the engine validates the presented chain (its caches included)."""
        return self._admit_tls("mqtts", self.engine.admit_proven, chain, client_id)

    def admit_verified(
        self, client_id: str, device_id: str, leaf: bytes, path: tuple[bytes, ...], resumed: bool = False
    ):
        """``full`` mode and resumed sessions: the chain was validated by the TLS layer (in this
        handshake, or in the one that made the resumed session)."""
        return self._admit_tls(
            "mqtts_resumed" if resumed else "mqtts", self.engine.admit_verified, device_id, client_id, leaf, path
        )

    def _admit_tls(self, label: str, step, *args) -> Admission | TlsRefusal:
        """The admission, or the refusal (counted under step ``label``)."""
        self.catch_up()
        if self._throttled():
            self.metrics.refused(label, "throttled")
            return TlsRefusal("throttled")
        admission, error, _ = self._timed(self.metrics.tls, step, *args)
        if error is not None:
            self.metrics.refused(label, error.code)
            return TlsRefusal(error.code)
        self.metrics.connected(label)
        return admission


__all__ = ["PENDING_KEYS", "SYNC_INTERVAL", "TRIM_INTERVAL", "Hub", "TlsRefusal", "WorkerConfig", "parsing_input"]
