"""The swarm's administrative calls to the hub: register Company-X's CA and prove possession, once per run;
read the hub's worker pids and memory for the run summary. Plain ``http.client`` (cooperative under
Locust's gevent patching), one short-lived connection per call.

Management calls carry the hub's token (``Authorization: Bearer``), from ``--admin-token-file`` or the
``CERTSTORM_ADMIN_TOKEN`` environment variable (:func:`admin_token`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from urllib.parse import urlsplit

import psutil
from cryptography.hazmat.primitives import serialization

_PEM = {"Content-Type": "application/x-pem-file"}
TOKEN_ENV = "CERTSTORM_ADMIN_TOKEN"


def admin_token(token_file: str | None = None) -> str | None:
    """The management token: the first line of ``token_file`` if given, else $CERTSTORM_ADMIN_TOKEN, else
    None. Raises ValueError naming the file when it cannot be read or is empty."""
    if token_file:
        try:
            with open(token_file, encoding="ascii") as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--admin-token-file {token_file}: {getattr(exc, 'strerror', None) or exc}") from None
        if not token:
            raise ValueError(f"--admin-token-file {token_file}: the file is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


class HubError(RuntimeError):
    def __init__(self, what: str, status: int, body: bytes):
        try:
            data = json.loads(body)
            code, message = data.get("error", f"http_{status}"), data.get("message", "")
        except ValueError:
            code, message = f"http_{status}", body[:200].decode("utf-8", "replace")
        if code.startswith("admin_token"):
            message += f" (give the hub's management token: --admin-token-file PATH or ${TOKEN_ENV})"
        super().__init__(f"{what}: {status} {code} {message}".rstrip())
        self.status = status
        self.code = code


def _json_object(what: str, status: int, data: bytes) -> dict:
    """A successful reply's JSON object; :class:`HubError` naming the call when the body is not one."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise HubError(f"{what}: the reply is not a JSON object", status, data)
    return doc


class HubClient:
    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hub URL must be http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """One request, with the token when there is one (the hub's public endpoints ignore it)."""
        if self.tls:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, self.prefix + path, body=body, headers={**(headers or {}), **self._auth})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def json(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, ok=(200, 201)
    ) -> dict:
        status, data = self.call(method, path, body, headers)
        if status not in ok:
            raise HubError(f"{method} {path}", status, data)
        return _json_object(f"{method} {path}", status, data)

    # -- CA registration and proof of possession -----------------------------------------------------------
    def ensure_ca(self, custodian) -> dict:
        """Register ``custodian``'s CA certificate and prove possession of its key, unless the hub already
        holds it verified. Returns what happened, for the run summary."""
        started = time.perf_counter()
        cert = custodian.certificate
        pem = cert.public_bytes(serialization.Encoding.PEM)
        ca_id = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        status, data = self.call("POST", "/cas", pem, _PEM)
        if status == 201:
            registered = _json_object("POST /cas", status, data)
            action = "registered"
        elif status == 409:
            registered = self.json("GET", f"/cas/{ca_id}")
            if registered.get("revoked"):
                raise HubError("CA already on the hub and revoked", 403, data)
            if registered.get("status") == "verified":
                return {
                    "id": ca_id,
                    "status": "verified",
                    "action": "already verified",
                    "seconds": round(time.perf_counter() - started, 4),
                }
            registered = self.json("POST", f"/cas/{ca_id}/verification-code")
            action = "re-proved (was unverified)"
        else:
            raise HubError("POST /cas", status, data)
        code = registered["verification_code"]
        proof = custodian.verification_certificate(code).public_bytes(serialization.Encoding.PEM)
        verified = self.json("POST", f"/cas/{registered['id']}/verify", proof, _PEM)
        if verified.get("status") != "verified":
            raise HubError("POST /cas/{id}/verify did not verify", 200, json.dumps(verified).encode())
        return {
            "id": registered["id"],
            "status": "verified",
            "action": action,
            "seconds": round(time.perf_counter() - started, 4),
        }

    # -- the hub's processes (for summaries) ---------------------------------------------------------------
    def healthz(self) -> dict:
        return self.json("GET", "/healthz")

    def memory(self) -> dict | None:
        """RSS of the hub's supervisor and workers and the workers' CPU seconds, when the hub runs on this
        machine."""
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            return None
        try:
            info = self.healthz()
        except Exception:
            return None
        workers = info.get("workers", [])
        rss, cpu = {}, {}
        for pid in [info.get("supervisor"), *workers]:
            if pid is None:
                continue
            try:
                process = psutil.Process(pid)
                rss[str(pid)] = process.memory_info().rss // 1024
                if pid in workers:
                    times = process.cpu_times()
                    cpu[str(pid)] = times.user + times.system
            except psutil.Error:
                continue
        return {
            "rss_kib": rss,
            "total_rss_kib": sum(rss.values()),
            "workers": info.get("workers"),
            "worker_cpu_s": cpu,
            "at": time.time(),
        }


__all__ = ["TOKEN_ENV", "HubClient", "HubError", "admin_token"]
