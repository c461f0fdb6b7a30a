"""The HTTP face of one hub worker: the request handling behind both servers of a worker.

The device endpoints are written transport-free (:meth:`Hub.challenge`, :meth:`Hub.proof` return a
:class:`DeviceReply`): the raw fast path (:mod:`hubsim.service.fastpath`) answers most device requests
with them, and :meth:`Hub.handle` -- a low-level aiohttp handler with a hand-written dispatcher --
answers everything else, device requests the fast path handed over included. Device responses are
assembled as bytes. Nothing here logs per request, and metrics go through the batched
accumulators of :mod:`hubsim.service.metrics`. Administrative endpoints first bring this worker's
engine up to date with the database (:meth:`Hub.sync`) so they always act on the latest state.

Errors are JSON ``{"error": code, "message": text}`` with the status of the engine's code. A request
the hub cannot make sense of is the client's fault and gets a 4xx; an exception that is not an
:class:`AuthError` is a hub bug: it is logged with its traceback and answered 500 ``internal_error``
(and the worker keeps serving).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from time import perf_counter
from typing import NamedTuple
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import DuplicateExtension, InvalidVersion, UnsupportedGeneralNameType

from hubsim.engine import AuthEngine, EnginePolicy
from hubsim.errors import AuthError
from hubsim.service.guard import SharedReplayGuard
from hubsim.service.metrics import Metrics, render
from hubsim.service.quota import SharedTokenBucket, retry_after_header
from hubsim.service.store import SqlRegistry, Store

log = logging.getLogger("certstorm.hub")

JSON_LIMIT = 16 * 1024          # proof and admin JSON bodies
SYNC_INTERVAL = 0.2             # seconds between change-log polls, registry and metrics flushes
TRIM_INTERVAL = 60.0
# After refusing a body for its size before reading it: how much more of it to read and drop, and for
# how long, before closing the connection (see Hub._close_after_refusal).
LINGER_BYTES = 256 * 1024
LINGER_SECONDS = 1.0
# Challenges whose parsed device key a worker keeps for a proof that comes back to it (the engine's
# shortcut past re-checking the seal and re-parsing the key). A parsed key costs ~2.8 KB: the engine's
# default of 65,536 made ~190 MB per worker of challenges nobody answers. 4,096 covers the challenge-to-
# proof time of ~0.4 s at 10,000 challenges/s per worker; a proof beyond it is checked by its seal.
PENDING_KEYS = 4096

# Content types a certificate upload may carry. curl's --data-binary defaults to the form type, so it is
# accepted too (the body is used as is). JSON, multipart forms and the like are refused with 415.
PEM_TYPES = frozenset({
    "", "application/x-pem-file", "application/pem-certificate-chain", "application/pkix-cert",
    "application/x-x509-ca-cert", "application/x-x509-user-cert", "application/octet-stream", "text/plain",
    "application/x-www-form-urlencoded",
})
JSON_TYPES = frozenset({"", "application/json", "text/plain", "application/x-www-form-urlencoded"})
_JSON = "application/json"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class WorkerConfig:
    db: str
    guard_path: str
    quota_path: str | None
    quota_label: str | None
    workers_file: str          # the supervisor keeps the live worker pids here
    index: int                 # this worker's slot (0-based)
    policy: EnginePolicy = EnginePolicy()


class DeviceReply(NamedTuple):
    status: int
    body: bytes          # JSON
    timing: str          # the Server-Timing header value
    retry_after: str | None

    def response(self) -> web.Response:
        headers = {"Server-Timing": self.timing}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.Response(body=self.body, status=self.status, content_type=_JSON, headers=headers)


def _error(exc: AuthError, headers: dict | None = None) -> web.Response:
    if exc.code == "throttled" and not (headers and "Retry-After" in headers):
        headers = {**(headers or {}), "Retry-After": "1"}
    body = json.dumps({"error": exc.code, "message": exc.message}).encode()
    return web.Response(body=body, status=exc.status, content_type=_JSON, headers=headers)


def _json(doc, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type=_JSON, headers=headers)


def _timing(chain: float, pop: float) -> str:
    return f"chain;dur={chain * 1e3:.3f}, pop;dur={pop * 1e3:.3f}"


def _b64(text, field: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise AuthError("malformed_input", f"{field!r} must be a non-empty base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    # Line-wrapped output of `openssl base64`, or the URL-safe alphabet.
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("malformed_input", f"{field!r} is not valid base64") from None


_last_parse_report = [0.0]


def _parsing(step, *args, **kwargs):
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


def _json_object(body: bytes) -> dict:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: '[[[[...' nested deeply
        raise AuthError("malformed_input", "the body is not a JSON document") from None
    if not isinstance(doc, dict):
        raise AuthError("malformed_input", "the body must be a JSON object")
    return doc


def _media_type(request: web.BaseRequest) -> str:
    value = request.headers.get("Content-Type")
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


def normalise_fingerprint(text) -> str:
    """Accept the hex SHA-256 fingerprint as the hub prints it, or as `openssl x509 -fingerprint -sha256`
    prints it (``sha256 Fingerprint=AB:CD:...``)."""
    if not isinstance(text, str):
        raise AuthError("malformed_input", "'fingerprint' must be a string")
    value = text.split("=", 1)[1] if "=" in text else text
    value = "".join(value.split()).replace(":", "").lower()
    try:
        ok = len(bytes.fromhex(value)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise AuthError("revocation_not_found", "fingerprint must be 64 hex digits (SHA-256 of the DER)")
    return value


class Hub:
    """One worker's engine, stores and request handling."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.store = Store(config.db)
        self.guard = SharedReplayGuard(config.guard_path)
        self.registry = SqlRegistry(self.store)
        policy = dataclasses.replace(config.policy, pending_keys=min(config.policy.pending_keys, PENDING_KEYS))
        self.engine = AuthEngine(secret=self.guard.secret, clock=time.time, random=os.urandom,
                                 policy=policy, replay_guard=self.guard, registry=self.registry)
        self.quota = SharedTokenBucket(config.quota_path) if config.quota_path else None
        self.metrics = Metrics(config.policy.challenge_ttl)
        self.chain_limit = config.policy.chain.max_upload_bytes
        self.ca_limit = config.policy.max_ca_upload_bytes
        self.started = time.time()
        self._generation = self.guard.generation()
        self._seq = self._load()
        self._last_trim = 0.0

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
        ca_id, der, status, registered_at, code, code_expires_at, verified_at = row
        self.engine.restore_ca(der, status=status, registered_at=registered_at, verification_code=code,
                               code_expires_at=code_expires_at, verified_at=verified_at)

    def _apply_ca(self, ca_id: str) -> None:
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
            if kind == "ca":
                self._apply_ca(key)
            elif kind == "revocation":
                self.engine.revoke(key)
            elif kind == "device":
                self.engine.disable_device(key, self.store.is_disabled(key))
            self._seq = seq
        return len(changes)

    def _changed(self) -> None:
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
            if self.quota is not None:
                self.quota.close()

    # -- dispatch -----------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = perf_counter()
        path = request.raw_path
        cut = path.find("?")
        if cut >= 0:
            path = path[:cut]
        method = request.method
        endpoint = "other"
        try:
            self.catch_up()
            if method == "POST" and path == "/devices/proof":
                endpoint = "proof"
                response = await self._proof(request)
            elif method == "POST" and path == "/devices/challenge":
                endpoint = "challenge"
                response = await self._challenge(request)
            else:
                endpoint, response = await self._route(request, method, path)
        except AuthError as exc:
            response = _error(exc)
        except Exception:
            log.exception("unexpected error in %s %s", method, path)
            response = _json({"error": "internal_error", "message": "The hub failed; the error is in its log."},
                             status=500)
        if response.status == 413 and not request.content.is_eof():
            await self._close_after_refusal(request, response)
        self.metrics.request(endpoint, response.status, perf_counter() - start)
        return response

    @staticmethod
    async def _close_after_refusal(request: web.BaseRequest, response: web.Response) -> None:
        """Answer a request whose body was refused for its size, unread, and close the connection.

        Left to itself aiohttp would keep the connection and read the rest of the body to throw it away,
        for up to its lingering time of 10 s: over loopback that is gigabytes and seconds of CPU for one
        request (4 GiB and 1.8 s measured). So the 413 goes out with ``Connection: close``, then at most
        LINGER_BYTES more are read and dropped, for at most LINGER_SECONDS -- enough for a client that is
        still sending to get to read the answer instead of a reset -- and the connection is closed.
        """
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        content = request.content
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        drained = 0
        try:
            while drained < LINGER_BYTES and not content.is_eof():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                chunk = await asyncio.wait_for(content.readany(), remaining)
                if not chunk:
                    break
                drained += len(chunk)
        except (asyncio.TimeoutError, ConnectionError, RequestPayloadError, HttpProcessingError):
            pass
        request.protocol.force_close()

    async def _route(self, request, method: str, path: str):
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        n = len(parts)
        head = parts[0] if parts else ""
        allowed: tuple[str, ...] = ()
        if n == 0:
            allowed = ("GET",)
            if method == "GET":
                return "index", self._index()
        elif head == "healthz" and n == 1:
            allowed = ("GET",)
            if method == "GET":
                return "healthz", self._healthz()
        elif head == "metrics" and n == 1:
            allowed = ("GET",)
            if method == "GET":
                return "metrics", await self._metrics()
        elif head == "cas":
            if n == 1:
                allowed = ("GET", "POST")
                if method == "GET":
                    return "admin", self._list_cas()
                if method == "POST":
                    return "admin", await self._register_ca(request)
            elif n == 2:
                allowed = ("GET", "DELETE")
                if method == "GET":
                    return "admin", self._get_ca(parts[1])
                if method == "DELETE":
                    return "admin", self._delete_ca(parts[1])
            elif n == 3 and parts[2] == "verify":
                allowed = ("POST",)
                if method == "POST":
                    return "admin", await self._verify_ca(request, parts[1])
            elif n == 3 and parts[2] == "verification-code":
                allowed = ("POST",)
                if method == "POST":
                    return "admin", self._new_code(parts[1])
        elif head == "revocations" and n == 1:
            allowed = ("GET", "POST")
            if method == "GET":
                return "admin", self._list_revocations()
            if method == "POST":
                return "admin", await self._revoke(request)
        elif head == "devices":
            if n == 2 and parts[1] in ("challenge", "proof") and method != "GET":
                allowed = ("POST", "GET")
            elif n == 2:
                allowed = ("GET",)
                if method == "GET":
                    return "admin", self._get_device(parts[1])
            elif n == 3 and parts[2] in ("disable", "enable"):
                allowed = ("POST",)
                if method == "POST":
                    return "admin", await self._set_disabled(request, parts[1], parts[2] == "disable")
        if not allowed:
            raise AuthError("not_found", f"no endpoint {path}")
        return "other", _error(AuthError("method_not_allowed", f"{path} takes {', '.join(allowed)}"),
                               {"Allow": ", ".join(allowed)})

    async def _body(self, request: web.BaseRequest, limit: int, types: frozenset) -> bytes:
        """The request body, refused before reading when it is too large or of the wrong kind."""
        if _media_type(request) not in types:
            raise AuthError("unsupported_media_type",
                            f"Content-Type {request.headers.get('Content-Type')!r} is not accepted here")
        encoding = request.headers.get("Content-Encoding")
        if encoding and encoding.strip().lower() != "identity":
            raise AuthError("unsupported_media_type", "compressed request bodies are not accepted")
        length = request.content_length
        if length is not None and length > limit:
            raise AuthError("upload_too_large", f"the body is {length} bytes; the limit here is {limit}")
        content = request.content
        chunks = []
        size = 0
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise AuthError("upload_too_large", f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
        except (ConnectionError, RequestPayloadError, HttpProcessingError):
            # The client went away mid-body, or framed it badly (chunked encoding, length): its fault,
            # and (if it is still there) it gets a 400; nothing to log.
            raise AuthError("malformed_input", "the request body was cut short or badly framed") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- the device path ----------------------------------------------------------------------------
    # Transport-independent: both the aiohttp handlers below and the raw fast path (fastpath.py) call
    # these with a complete body and turn the DeviceReply into bytes on the wire.
    def catch_up(self) -> None:
        """Apply other workers' administrative changes if the shared generation moved (0.3 µs if not)."""
        generation = self.guard.generation()
        if generation != self._generation:
            self._generation = generation
            self.sync()

    def throttle(self) -> DeviceReply | None:
        """The 429 reply when the connection quota is exhausted, else None (a token was taken)."""
        quota = self.quota
        if quota is None:
            return None
        wait = quota.take()
        if not wait:
            return None
        self.metrics.throttled()
        return self.refusal("challenge", AuthError("throttled"), retry_after=retry_after_header(wait))

    def refusal(self, step: str, exc: AuthError, chain: float = 0.0, pop: float = 0.0,
                retry_after: str | None = None) -> DeviceReply:
        self.metrics.refused(step, exc.code)
        if exc.code == "throttled" and retry_after is None:
            retry_after = "1"  # the replay guard is full: back off briefly
        body = json.dumps({"error": exc.code, "message": exc.message}).encode()
        return DeviceReply(exc.status, body, _timing(chain, pop), retry_after)

    @staticmethod
    def _timed(histogram, step, *args):
        """Run an engine step, timed into ``histogram``: ``(result, None, seconds)``, or ``(None, error,
        seconds)`` when the engine refused."""
        t0 = perf_counter()
        try:
            result, error = _parsing(step, *args), None
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
        out = b"".join((
            b'{"device_id":', json.dumps(challenge.device_id).encode(),
            b',"challenge":"', base64.b64encode(challenge.token),
            b'","expires_at":', b"%.3f" % challenge.expires_at, b"}",
        ))
        return DeviceReply(200, out, _timing(took, 0.0), None)

    def proof(self, body: bytes) -> DeviceReply:
        try:
            doc = _json_object(body)
            token = _b64(doc.get("challenge"), "challenge")
            signature = _b64(doc.get("signature"), "signature")
        except AuthError as exc:
            return self.refusal("proof", exc)
        admission, error, took = self._timed(self.metrics.pop, self.engine.complete, token, signature)
        if error is not None:
            return self.refusal("proof", error, pop=took)
        self.metrics.admitted(admission.challenge_expires_at)  # keeps the pending-challenge gauge
        out = b"".join((
            b'{"device_id":', json.dumps(admission.device_id).encode(),
            b',"ca":"', admission.ca.encode(),
            b'","first_connection":', b"true}" if admission.first_connection else b"false}",
        ))
        return DeviceReply(200, out, _timing(0.0, took), None)

    async def _challenge(self, request: web.BaseRequest) -> web.Response:
        reply = self.throttle()
        if reply is None:
            try:
                body = await self._body(request, self.chain_limit, PEM_TYPES)
            except AuthError as exc:
                reply = self.refusal("challenge", exc)
            else:
                reply = self.challenge(body)
        return reply.response()

    async def _proof(self, request: web.BaseRequest) -> web.Response:
        try:
            body = await self._body(request, JSON_LIMIT, JSON_TYPES)
        except AuthError as exc:
            return self.refusal("proof", exc).response()
        return self.proof(body).response()

    # -- CAs ----------------------------------------------------------------------------------------
    def _ca_json(self, record, detail: bool = False) -> dict:
        doc = record.to_json()
        doc["registered_at"] = record.registered_at
        if record.status == "verified":
            doc["verified_at"] = record.verified_at
        doc["revoked"] = self.engine.is_revoked(bytes.fromhex(record.id))
        if detail:
            pem = base64.encodebytes(record.der).decode().replace("\n", "")
            lines = [pem[i : i + 64] for i in range(0, len(pem), 64)]
            doc["certificate"] = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        return doc

    async def _register_ca(self, request) -> web.Response:
        body = await self._body(request, self.ca_limit, PEM_TYPES)
        self.sync()
        record = _parsing(self.engine.register_ca, body)
        if not self.store.insert_ca(record, time.time()):
            self.engine.remove_ca(record.id)
            self.sync()
            raise AuthError("ca_exists")
        self._changed()
        return _json(self._ca_json(record), status=201, headers={"Location": f"/cas/{record.id}"})

    def _list_cas(self) -> web.Response:
        self.sync()
        records = sorted(self.engine.list_cas(), key=lambda r: r.registered_at)
        return _json({"cas": [self._ca_json(r) for r in records]})

    def _get_ca(self, ca_id: str) -> web.Response:
        self.sync()
        return _json(self._ca_json(self.engine.get_ca(ca_id), detail=True))

    def _delete_ca(self, ca_id: str) -> web.Response:
        self.sync()
        record = self.engine.get_ca(ca_id)
        if not self.store.delete_ca(record.id, time.time()):
            self.sync()
            raise AuthError("ca_not_found")
        self.engine.remove_ca(record.id)
        self._changed()
        return _json({"id": record.id, "status": "removed"})

    def _new_code(self, ca_id: str) -> web.Response:
        self.sync()
        record = self.engine.new_verification_code(ca_id)
        if not self.store.update_ca_code(record, time.time()):
            self.sync()
            raise AuthError("ca_not_found")
        self._changed()
        return _json(self._ca_json(record))

    async def _verify_ca(self, request, ca_id: str) -> web.Response:
        kind = _media_type(request)
        body = await self._body(request, max(self.ca_limit, JSON_LIMIT), PEM_TYPES | JSON_TYPES)
        self.sync()
        record = self.engine.get_ca(ca_id)
        if kind == "application/json" or body.lstrip()[:1] in (b"{", b"["):
            signature = _b64(_json_object(body).get("signature"), "signature")
            certificate = None
        else:
            signature, certificate = None, body
        code = record.verification_code
        record = _parsing(self.engine.verify_ca, record.id, certificate=certificate, signature=signature)
        if not self.store.mark_ca_verified(record, code, time.time()):
            # Another worker removed, verified or re-coded this CA meanwhile: take its version.
            self._apply_ca(record.id)
            current = self.engine.get_ca(record.id)
            if current.status == "verified":
                raise AuthError("ca_already_verified")
            raise AuthError("verification_code_mismatch", "the verification code was replaced meanwhile")
        self._changed()
        return _json({"id": record.id, "subject": record.subject, "status": "verified",
                      "verified_at": record.verified_at})

    # -- revocations and devices --------------------------------------------------------------------
    async def _revoke(self, request) -> web.Response:
        doc = _json_object(await self._body(request, JSON_LIMIT, JSON_TYPES))
        fp = normalise_fingerprint(doc.get("fingerprint"))
        revoked_at = self.store.insert_revocation(fp, time.time())
        self.engine.revoke(fp)
        self._changed()
        return _json({"fingerprint": fp, "revoked_at": revoked_at}, status=201)

    def _list_revocations(self) -> web.Response:
        return _json({"revocations": [{"fingerprint": fp, "revoked_at": at} for fp, at in self.store.revocations()]})

    async def _set_disabled(self, request, device_id: str, disabled: bool) -> web.Response:
        await self._body(request, JSON_LIMIT, JSON_TYPES)  # an optional body is read and ignored
        if not device_id or len(device_id.encode()) > 1024:
            raise AuthError("malformed_input", "device ids are 1 to 1024 bytes")
        self.store.set_disabled(device_id, disabled, time.time())
        self.engine.disable_device(device_id, disabled)
        self._changed()
        return _json({"device_id": device_id, "disabled": disabled})

    def _get_device(self, device_id: str) -> web.Response:
        doc = self.registry.get(device_id)
        if doc is None or (doc["first_seen"] is None and not doc["disabled"]):
            raise AuthError("device_not_found")
        return _json(doc)

    # -- service ------------------------------------------------------------------------------------
    def _workers(self) -> list[int]:
        try:
            with open(self.config.workers_file) as fh:
                return [int(p) for p in fh.read().split()]
        except (OSError, ValueError):
            return []

    def _healthz(self) -> web.Response:
        stats = self.engine.stats()
        return _json({
            "status": "ok", "pid": os.getpid(), "worker": self.config.index, "workers": self._workers(),
            "supervisor": os.getppid(), "uptime": round(time.time() - self.started, 3),
            "quota": self.config.quota_label, "cas": stats["cas"], "revoked": stats["revoked"],
            "issuer_cache": stats["cache_size"], "registry_pending": self.registry.pending,
        })

    async def _metrics(self) -> web.Response:
        self.metrics.flush(time.time(), self.engine.stats(), self.registry.pending, self.registry.lag(time.time()))
        return web.Response(body=render(), headers={"Content-Type": _PROMETHEUS})

    def _index(self) -> web.Response:
        return _json({"service": "certstorm hub", "docs": "docs/api.md", "endpoints": [
            "POST /cas", "GET /cas", "GET /cas/{id}", "DELETE /cas/{id}", "POST /cas/{id}/verify",
            "POST /cas/{id}/verification-code", "POST /devices/challenge", "POST /devices/proof",
            "POST /revocations", "GET /revocations", "POST /devices/{id}/disable", "POST /devices/{id}/enable",
            "GET /devices/{id}", "GET /metrics", "GET /healthz",
        ]})

