"""A minimal HTTP/1.1 keep-alive client for the two device requests, on gevent sockets.

The generator must cost less per authentication than the hub it loads, and FastHttpUser's client cost
it markedly more CPU than this one (docs/design.md). The device exchange is always the same two POSTs
with a ``Content-Length`` body, so each request is one ``sendall`` and its reply a few ``recv`` calls:
no cookie jar, redirects or compression. Everything else (CA registration, metrics) uses ordinary clients.

Only replies framed by ``Content-Length`` are read, as the hub sends them. A reply it cannot frame
(chunked, no or a malformed ``Content-Length``, a malformed head) or a 200 whose body is not a JSON
object raises :class:`WireError` naming the problem (``chunked_reply``, ...), which the swarm counts as a
failure: never a body guessed from a misread reply. ``https://`` hubs work (unverified, like
FastHttpUser's default), at a TLS handshake per connection slot, not per device.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import socket
import ssl
from urllib.parse import urlsplit

from gevent import socket as gsocket

_TIMING_ITEM = re.compile(rb"([a-z]+);dur=([0-9.]+)")
_NO_BODY = (204, 304)
MAX_HEAD = 65536


class WireError(Exception):
    """A transport failure; ``code`` is how the swarm classifies it (``connection_refused`` ...)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """(status, headers by lower-case name) of a reply head without its final blank line."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    if (
        not status_line.startswith(b"HTTP/1.")
        or not status_line[9:12].isdigit()
        or status_line[12:13] not in (b"", b" ")
    ):
        raise WireError("bad_response", f"not an HTTP/1.x status line: {status_line[:40]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise WireError("bad_response", f"malformed header line: {line[:40]!r}")
        name = name.lower()
        value = value.strip()
        if name in headers:  # a repeated field is one comma-separated list (RFC 9110 5.3)
            if name == b"content-length" and headers[name] != value:
                raise WireError("bad_content_length", "conflicting Content-Length headers")
            value = headers[name] if name == b"content-length" else headers[name] + b", " + value
        headers[name] = value
    return int(status_line[9:12]), headers


def body_length(status: int, headers: dict[bytes, bytes]) -> int:
    """The body length the head announces; :class:`WireError` for a reply this client cannot frame."""
    if b"transfer-encoding" in headers:
        raise WireError(
            "chunked_reply",
            f"Transfer-Encoding {headers[b'transfer-encoding'][:40].decode('latin-1')!r}: "
            "only replies framed by Content-Length are read",
        )
    length = headers.get(b"content-length")
    if length is None:
        if status in _NO_BODY or 100 <= status < 200:
            return 0
        raise WireError("reply_without_length", f"HTTP {status} reply has no Content-Length")
    if not length.isdigit():
        raise WireError("bad_content_length", f"Content-Length {length[:40].decode('latin-1')!r}")
    return int(length)


class Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict:
        """The body as a JSON object; :class:`WireError` (``reply_not_json``) if it is not one."""
        media = self.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            raise WireError(
                "reply_not_json",
                f"HTTP {self.status} reply is {media.decode('latin-1') or 'untyped'!r}, not application/json",
            )
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise WireError("reply_not_json", f"HTTP {self.status} body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise WireError("reply_not_json", f"HTTP {self.status} body is JSON but not an object")
        return data

    def server_timing(self) -> dict[str, float]:
        """``Server-Timing`` durations in milliseconds, by name (``chain``, ``pop``)."""
        value = self.headers.get(b"server-timing")
        if not value:
            return {}
        return {k.decode(): float(v) for k, v in _TIMING_ITEM.findall(value)}

    def retry_after(self) -> float | None:
        value = self.headers.get(b"retry-after")
        try:
            return float(value) if value else None
        except ValueError:
            return None


def _classify(exc: BaseException) -> str:
    if isinstance(exc, WireError):
        return exc.code
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "connection_reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    return "connection_error"


class Connection:
    """One keep-alive connection (one Locust user = one connection slot). Reconnects on demand."""

    def __init__(self, url: str, *, timeout: float = 30.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hub URL must be http:// or https://, got {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/").encode()
        host_header = self.host if parts.port is None else f"{self.host}:{parts.port}"
        self._host_line = f"Host: {host_header}\r\n".encode()
        self.timeout = timeout
        self.sock = None
        self._buf = b""
        self.connects = 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self._buf = b""

    def _connect(self):
        sock = gsocket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock
        self._buf = b""
        self.connects += 1
        return sock

    def post(self, path: bytes, content_type: bytes, body: bytes) -> Reply:
        """POST and read the whole reply. Raises :class:`WireError` (connection closed) on transport failure
        and on a reply this client cannot frame."""
        try:
            return self._post(path, content_type, body)
        except Exception as exc:
            self.close()
            if isinstance(exc, WireError):
                raise
            raise WireError(_classify(exc), f"{type(exc).__name__}: {exc}") from None

    def _post(self, path: bytes, content_type: bytes, body: bytes) -> Reply:
        sock = self.sock or self._connect()
        sock.sendall(
            b"POST %s%s HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (self.prefix, path, self._host_line, content_type, len(body), body)
        )
        buf = self._buf
        recv = sock.recv
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise WireError("bad_response", "response head too large")
            chunk = recv(65536)
            if not chunk:
                raise WireError("connection_closed", "the hub closed the connection")
            buf += chunk
        status, headers = parse_head(buf[:end])
        start = end + 4
        stop = start + body_length(status, headers)
        while len(buf) < stop:
            chunk = recv(65536)
            if not chunk:
                raise WireError("connection_closed", "the hub closed the connection mid-body")
            buf += chunk
        self._buf = buf[stop:]
        reply = Reply(status, headers, buf[start:stop])
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return reply


def challenge_of(data: dict) -> tuple[bytes, bytes]:
    """The challenge of a 200 reply to the challenge request: as sent back in the proof, and decoded."""
    token = data.get("challenge")
    try:
        text = token.encode("ascii")
        return text, base64.b64decode(text, validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error):
        raise WireError("reply_without_challenge", "the challenge reply has no base64 challenge") from None


def first_connection_of(data: dict) -> bool:
    """Whether the proof's 200 reply says this was the device's first connection."""
    return data.get("first_connection") is True


__all__ = [
    "MAX_HEAD",
    "Connection",
    "Reply",
    "WireError",
    "body_length",
    "challenge_of",
    "first_connection_of",
    "parse_head",
]
