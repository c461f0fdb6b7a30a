"""The HTTP front of one hub worker: aiohttp dispatch, the administrative and service endpoints, and the
device endpoints for requests the raw fast path (:mod:`hubsim.service.fastpath`) handed over.

It holds no state of its own: everything is the worker's :class:`~hubsim.service.hub.Hub`.
Management endpoints (:func:`is_management`) pass the worker's :class:`~hubsim.service.credential.AdminGate`
first, before any body is read; the device endpoints never do.
Administrative endpoints first bring this worker's engine up to date with the database
(:meth:`Hub.sync`) so they always act on the latest state. A request the hub cannot make sense of is
the client's fault and gets a 4xx; an exception that is not an :class:`AuthError` is a hub bug: it is
logged with its traceback and answered 500 ``internal_error`` (and the worker keeps serving).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from time import perf_counter
from urllib.parse import unquote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from hubsim.encoding import pem_certificate
from hubsim.errors import AuthError
from hubsim.service.codec import JSON_LIMIT, JSON_TYPES, PEM_TYPES, DeviceReply, decode_b64, error_reply, json_object
from hubsim.service.credential import Operator, Refusal
from hubsim.service.hub import Hub, parsing_input
from hubsim.service.metrics import render
from hubsim.upload import read_certificates

log = logging.getLogger("certstorm.hub")

# After refusing a body for its size before reading it: how much more of it to read and drop, and for
# how long, before closing the connection (see HttpApi._close_after_refusal).
LINGER_BYTES = 256 * 1024
LINGER_SECONDS = 1.0

AUDIT_PAGE = (1000, 10000)  # GET /audit: default and largest ?limit
_JSON = "application/json"
_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


def to_response(reply: DeviceReply, headers: dict | None = None) -> web.Response:
    out = dict(headers or {})
    if reply.timing:
        out["Server-Timing"] = reply.timing
    if reply.retry_after is not None:
        out["Retry-After"] = reply.retry_after
    return web.Response(body=reply.body, status=reply.status, content_type=_JSON, headers=out)


def _error(exc: AuthError, headers: dict | None = None) -> web.Response:
    return to_response(error_reply(exc), headers)


def json_response(doc, status: int = 200, headers: dict | None = None) -> web.Response:
    """A JSON document as the answer."""
    return web.Response(body=json.dumps(doc).encode(), status=status, content_type=_JSON, headers=headers)


def _media_type(request: web.BaseRequest) -> str:
    value = request.headers.get("Content-Type")
    if not value:
        return ""
    return value.split(";", 1)[0].strip().lower()


# A management call refused for its credential is answered before its body is read and, like a body
# refused for its size (413), the rest is not read: the connection is closed (HttpApi._close_after_refusal).
_CREDENTIAL_REFUSALS = frozenset({401, 403, 429})


def is_management(parts: list[str]) -> bool:
    """Whether a path (split at '/') is a management endpoint, which needs the operator's credential.
    Everything under /cas, /revocations, /audit and /devices except the two device steps."""
    head = parts[0] if parts else ""
    if head == "devices":
        return not (len(parts) == 2 and parts[1] in ("challenge", "proof"))
    return head in ("cas", "revocations", "audit")


def _query_int(request: web.BaseRequest, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise AuthError("malformed_input", f"?{name} must be a whole number from {low} to {high}")
    return int(text)


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


# Path segments ("{}" takes any one segment, passed to the handler) and, per method, the endpoint label
# metrics count it under and the HttpApi method that answers it. The first pattern a path matches is its
# endpoint, so /devices/challenge and /devices/proof are the device steps (POST only), never the
# management read of a device so named.
ROUTES: tuple[tuple[tuple[str, ...], dict[str, tuple[str, str]]], ...] = (
    ((), {"GET": ("index", "_index")}),
    (("healthz",), {"GET": ("healthz", "_healthz")}),
    (("metrics",), {"GET": ("metrics", "_metrics")}),
    (("cas",), {"GET": ("admin", "_list_cas"), "POST": ("admin", "_register_ca")}),
    (("cas", "{}"), {"GET": ("admin", "_get_ca"), "DELETE": ("admin", "_delete_ca")}),
    (("cas", "{}", "verify"), {"POST": ("admin", "_verify_ca")}),
    (("cas", "{}", "verification-code"), {"POST": ("admin", "_new_code")}),
    (("revocations",), {"GET": ("admin", "_list_revocations"), "POST": ("admin", "_revoke")}),
    (("audit",), {"GET": ("admin", "_audit")}),
    (("devices", "challenge"), {"POST": ("challenge", "_challenge")}),
    (("devices", "proof"), {"POST": ("proof", "_proof")}),
    (("devices", "{}"), {"GET": ("admin", "_get_device"), "PUT": ("admin", "_provision_device")}),
    (("devices", "{}", "disable"), {"POST": ("admin", "_disable")}),
    (("devices", "{}", "enable"), {"POST": ("admin", "_enable")}),
)


def _match(pattern: tuple[str, ...], parts: list[str]) -> tuple[str, ...] | None:
    """The segments a pattern's ``{}`` take from ``parts``, or None when the path does not match it."""
    if len(pattern) != len(parts):
        return None
    taken = []
    for want, got in zip(pattern, parts):
        if want == "{}":
            taken.append(got)
        elif want != got:
            return None
    return tuple(taken)


class HttpApi:
    """Answers every HTTP request the fast path did not, with the worker's :class:`Hub`. A service of the
    same family (DPS) subclasses it with its own :attr:`routes` and :meth:`is_management`."""

    routes = ROUTES
    device_steps = True  # POST /devices/challenge and /devices/proof are served here

    def __init__(self, hub: Hub):
        self.hub = hub
        self.engine = hub.engine
        self.store = hub.store
        self.metrics = hub.metrics

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
            self.hub.catch_up()
            if self.device_steps and method == "POST" and path == "/devices/proof":
                endpoint = "proof"
                response = await self._proof(request)
            elif self.device_steps and method == "POST" and path == "/devices/challenge":
                endpoint = "challenge"
                response = await self._challenge(request)
            else:
                endpoint, response = await self._route(request, method, path)
        except AuthError as exc:
            response = _error(exc)
        except Exception:
            log.exception("unexpected error in %s %s", method, path)
            response = json_response(
                {"error": "internal_error", "message": "The hub failed; the error is in its log."}, status=500
            )
        refused_unread = response.status == 413 or (endpoint == "admin" and response.status in _CREDENTIAL_REFUSALS)
        if refused_unread and not request.content.is_eof():
            await self._close_after_refusal(request, response)
        self.metrics.request(endpoint, response.status, perf_counter() - start)
        return response

    @staticmethod
    async def _close_after_refusal(request: web.BaseRequest, response: web.Response) -> None:
        """Answer a request whose body was refused for its size, unread, and close the connection.

        Left to itself aiohttp would keep the connection and read the rest of the body to throw it away,
        for up to its lingering time of 10 s: over loopback that is gigabytes and seconds of CPU for one
        request (docs/design.md). So the 413 goes out with ``Connection: close``, then at most
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
        except (TimeoutError, ConnectionError, RequestPayloadError, HttpProcessingError):
            pass
        request.protocol.force_close()

    async def _route(self, request, method: str, path: str):
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        operator = None
        if self.is_management(parts):
            verdict = self.hub.gate.check(request.headers.getall("Authorization", []), request.remote)
            if isinstance(verdict, Refusal):
                self.metrics.management_refused(verdict.error.code)
                return "admin", _error(verdict.error, verdict.headers)
            operator = verdict
        found = next(((m, a) for p, m in self.routes if (a := _match(p, parts)) is not None), None)
        if found is None:
            raise AuthError("not_found", f"no endpoint {path}")
        methods, args = found
        if method not in methods:
            names = ", ".join(methods)
            return "other", _error(AuthError("method_not_allowed", f"{path} takes {names}"), {"Allow": names})
        endpoint, handler = methods[method]
        return endpoint, await getattr(self, handler)(request, operator, *args)

    @staticmethod
    def is_management(parts: list[str]) -> bool:
        return is_management(parts)

    async def _body(self, request: web.BaseRequest, limit: int, types: frozenset) -> bytes:
        """The request body, refused before reading when it is too large or of the wrong kind."""
        if _media_type(request) not in types:
            raise AuthError(
                "unsupported_media_type", f"Content-Type {request.headers.get('Content-Type')!r} is not accepted here"
            )
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

    async def _challenge(self, request: web.BaseRequest, operator: None = None) -> web.Response:
        reply = self.hub.throttle()
        if reply is None:
            try:
                body = await self._body(request, self.hub.chain_limit, PEM_TYPES)
            except AuthError as exc:
                reply = self.hub.refusal("challenge", exc)
            else:
                reply = self.hub.challenge(body)
        return to_response(reply)

    async def _proof(self, request: web.BaseRequest, operator: None = None) -> web.Response:
        try:
            body = await self._body(request, JSON_LIMIT, JSON_TYPES)
        except AuthError as exc:
            return to_response(self.hub.refusal("proof", exc))
        return to_response(self.hub.proof(body))

    # -- CAs ----------------------------------------------------------------------------------------
    def _ca_json(self, record, detail: bool = False) -> dict:
        doc = record.to_json()
        doc["registered_at"] = record.registered_at
        if record.status == "verified":
            doc["verified_at"] = record.verified_at
        doc["revoked"] = self.engine.is_revoked(bytes.fromhex(record.id))
        if detail:
            doc["certificate"] = pem_certificate(record.der).decode("ascii")
        return doc

    async def _register_ca(self, request, operator: Operator) -> web.Response:
        body = await self._body(request, self.hub.ca_limit, PEM_TYPES)
        self.hub.sync()
        record = parsing_input(self.engine.register_ca, body)
        if not self.store.insert_ca(record, time.time(), operator):
            self.engine.remove_ca(record.id)
            self.hub.sync()
            raise AuthError("ca_exists")
        self.hub.changed()
        return json_response(self._ca_json(record), status=201, headers={"Location": f"/cas/{record.id}"})

    async def _list_cas(self, request, operator: Operator) -> web.Response:
        self.hub.sync()
        records = sorted(self.engine.list_cas(), key=lambda r: r.registered_at)
        return json_response({"cas": [self._ca_json(r) for r in records]})

    async def _get_ca(self, request, operator: Operator, ca_id: str) -> web.Response:
        self.hub.sync()
        return json_response(self._ca_json(self.engine.get_ca(ca_id), detail=True))

    async def _delete_ca(self, request, operator: Operator, ca_id: str) -> web.Response:
        self.hub.sync()
        record = self.engine.get_ca(ca_id)
        if not self.store.delete_ca(record.id, time.time(), operator):
            self.hub.sync()
            raise AuthError("ca_not_found")
        self.engine.remove_ca(record.id)
        self.hub.changed()
        return json_response({"id": record.id, "status": "removed"})

    async def _new_code(self, request, operator: Operator, ca_id: str) -> web.Response:
        self.hub.sync()
        record = self.engine.new_verification_code(ca_id)
        if not self.store.update_ca_code(record, time.time(), operator):
            self.hub.sync()
            raise AuthError("ca_not_found")
        self.hub.changed()
        return json_response(self._ca_json(record))

    async def _verify_ca(self, request, operator: Operator, ca_id: str) -> web.Response:
        kind = _media_type(request)
        body = await self._body(request, max(self.hub.ca_limit, JSON_LIMIT), PEM_TYPES | JSON_TYPES)
        self.hub.sync()
        record = self.engine.get_ca(ca_id)
        if kind == "application/json" or body.lstrip()[:1] in (b"{", b"["):
            signature = decode_b64(json_object(body).get("signature"), "signature")
            certificate = None
        else:
            signature, certificate = None, body
        code = record.verification_code
        record = parsing_input(self.engine.verify_ca, record.id, certificate=certificate, signature=signature)
        proof = None
        if certificate is not None:  # the engine read it already: one certificate within the limit
            proof = read_certificates(certificate, max_bytes=self.hub.ca_limit, max_certificates=1)[0].fingerprint.hex()
        if not self.store.mark_ca_verified(record, code, time.time(), operator, proof):
            # Another worker removed, verified or re-coded this CA meanwhile: take its version.
            self.hub.apply_ca(record.id)
            current = self.engine.get_ca(record.id)
            if current.status == "verified":
                raise AuthError("ca_already_verified")
            raise AuthError("verification_code_mismatch", "the verification code was replaced meanwhile")
        self.hub.changed()
        return json_response(
            {"id": record.id, "subject": record.subject, "status": "verified", "verified_at": record.verified_at}
        )

    # -- revocations and devices --------------------------------------------------------------------
    async def _revoke(self, request, operator: Operator) -> web.Response:
        doc = json_object(await self._body(request, JSON_LIMIT, JSON_TYPES))
        fp = normalise_fingerprint(doc.get("fingerprint"))
        revoked_at = self.store.insert_revocation(fp, time.time(), operator)
        self.engine.revoke(fp)
        self.hub.changed()
        return json_response({"fingerprint": fp, "revoked_at": revoked_at}, status=201)

    async def _list_revocations(self, request, operator: Operator) -> web.Response:
        revoked = [{"fingerprint": fp, "revoked_at": at} for fp, at in self.store.revocations()]
        return json_response({"revocations": revoked})

    async def _disable(self, request, operator: Operator, device_id: str) -> web.Response:
        return await self._set_disabled(request, operator, device_id, True)

    async def _enable(self, request, operator: Operator, device_id: str) -> web.Response:
        return await self._set_disabled(request, operator, device_id, False)

    async def _set_disabled(self, request, operator: Operator, device_id: str, disabled: bool) -> web.Response:
        await self._body(request, JSON_LIMIT, JSON_TYPES)  # an optional body is read and ignored
        if not device_id or len(device_id.encode()) > 1024:
            raise AuthError("malformed_input", "device ids are 1 to 1024 bytes")
        self.store.set_disabled(device_id, disabled, time.time(), operator)
        self.engine.disable_device(device_id, disabled)
        self.hub.changed()
        return json_response({"device_id": device_id, "disabled": disabled})

    async def _audit(self, request, operator: Operator) -> web.Response:
        after = _query_int(request, "after", 0, 0, 1 << 62)
        entries = self.store.audit(after, _query_int(request, "limit", AUDIT_PAGE[0], 1, AUDIT_PAGE[1]))
        return json_response({"entries": entries, "next": entries[-1]["seq"] if entries else after})

    async def _get_device(self, request, operator: Operator, device_id: str) -> web.Response:
        doc = self.hub.registry.get(device_id)
        identity = self.store.identity(device_id)
        if identity is None and (doc is None or (doc["first_seen"] is None and not doc["disabled"])):
            raise AuthError("device_not_found")
        if doc is None:
            doc = {"device_id": device_id, "first_seen": None, "last_authenticated": None, "ca": None}
            doc.update(authentications=0, disabled=False, disabled_at=None)
        doc["provisioned"] = identity
        return json_response(doc)

    async def _provision_device(self, request, operator: Operator, device_id: str) -> web.Response:
        """A provisioning service (DPS) writes the identity it assigned to this hub; committed before the
        answer, so an acknowledged assignment is in this hub's registry."""
        doc = json_object(await self._body(request, JSON_LIMIT, JSON_TYPES))
        if not device_id or len(device_id.encode()) > 1024:
            raise AuthError("malformed_input", "device ids are 1 to 1024 bytes")
        source, detail = doc.get("source"), doc.get("detail", {})
        if not isinstance(source, str) or not 0 < len(source) <= 256 or not isinstance(detail, dict):
            raise AuthError("malformed_input", "'source' must be a string of 1 to 256 characters, 'detail' an object")
        identity = {"source": source, "detail": detail}
        for name in ("thumbprint", "ca"):
            if doc.get(name) is not None:
                try:
                    identity[name] = normalise_fingerprint(doc[name])
                except AuthError:
                    raise AuthError("malformed_input", f"'{name}' must be a SHA-256 fingerprint") from None
        self.store.provision(device_id, identity, time.time(), operator)
        self.hub.registry.forget_identity(device_id)
        self.hub.changed()  # every other worker reads the change log before its next request
        return json_response({"device_id": device_id, "provisioned": self.store.identity(device_id)})

    # -- service ------------------------------------------------------------------------------------
    def _workers(self) -> list[int]:
        try:
            with open(self.hub.config.workers_file) as fh:
                return [int(p) for p in fh.read().split()]
        except (OSError, ValueError):
            return []

    def health(self) -> dict:
        """What GET /healthz answers (a service of the same family adds its own fields)."""
        stats = self.engine.stats()
        return {
            "status": "ok",
            "pid": os.getpid(),
            "worker": self.hub.config.index,
            "workers": self._workers(),
            "supervisor": os.getppid(),
            "uptime": round(time.time() - self.hub.started, 3),
            "quota": self.hub.config.quota_label,
            "cas": stats["cas"],
            "revoked": stats["revoked"],
            "issuer_cache": stats["cache_size"],
            "registry_pending": self.hub.registry.pending,
        }

    async def _healthz(self, request, operator: None) -> web.Response:
        return json_response(self.health())

    async def _metrics(self, request, operator: None) -> web.Response:
        self.metrics.flush(
            time.time(), self.engine.stats(), self.hub.registry.pending, self.hub.registry.lag(time.time())
        )
        return web.Response(body=render(), headers={"Content-Type": _PROMETHEUS})

    async def _index(self, request, operator: None) -> web.Response:
        return json_response(
            {
                "service": "certstorm hub",
                "docs": "docs/api.md",
                "endpoints": [
                    "POST /cas",
                    "GET /cas",
                    "GET /cas/{id}",
                    "DELETE /cas/{id}",
                    "POST /cas/{id}/verify",
                    "POST /cas/{id}/verification-code",
                    "POST /devices/challenge",
                    "POST /devices/proof",
                    "POST /revocations",
                    "GET /revocations",
                    "POST /devices/{id}/disable",
                    "POST /devices/{id}/enable",
                    "GET /devices/{id}",
                    "PUT /devices/{id}",
                    "GET /audit",
                    "GET /metrics",
                    "GET /healthz",
                ],
            }
        )


__all__ = [
    "AUDIT_PAGE",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "ROUTES",
    "HttpApi",
    "is_management",
    "json_response",
    "normalise_fingerprint",
    "to_response",
]
