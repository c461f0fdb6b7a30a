"""A minimal HTTP/1.1 keep-alive client for the two device requests, on gevent sockets.

Why not FastHttpUser's client: measured here (hub pinned to one core, Locust to the other), a device
authentication through ``FastHttpUser`` cost the generator about 815 µs of CPU -- 1,230 authentications
per generator core-second, short of the 1,500 the swarm must reach -- against about 490 µs with this
client. The device exchange is always the same two POSTs with a ``Content-Length`` body, so the client
writes each request with one ``sendall`` and reads the reply with a few ``recv`` calls: no header objects,
no cookie jar, no redirects, no compression. Everything else (CA registration, metrics) goes through
ordinary clients.

``https://`` hubs are supported (no certificate verification, like FastHttpUser's default), which costs a
TLS handshake per connection slot, not per device.
"""

from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import urlsplit

from gevent import socket as gsocket

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_SERVER_TIMING = re.compile(rb"\r\nserver-timing:([^\r]*)", re.IGNORECASE)
_TIMING_ITEM = re.compile(rb"([a-z]+);dur=([0-9.]+)")
_RETRY_AFTER = re.compile(rb"\r\nretry-after:[ \t]*([0-9.]+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
MAX_HEAD = 65536


class WireError(Exception):
    """A transport failure; ``code`` is how the swarm classifies it (``connection_refused`` ...)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(code)
        self.code = code
        self.detail = detail


class Reply:
    __slots__ = ("status", "head", "body")

    def __init__(self, status: int, head: bytes, body: bytes):
        self.status = status
        self.head = head
        self.body = body

    def server_timing(self) -> dict[str, float]:
        """``Server-Timing`` durations in milliseconds, by name (``chain``, ``pop``)."""
        m = _SERVER_TIMING.search(self.head)
        if not m:
            return {}
        return {k.decode(): float(v) for k, v in _TIMING_ITEM.findall(m.group(1))}

    def retry_after(self) -> float | None:
        m = _RETRY_AFTER.search(self.head)
        return float(m.group(1)) if m else None


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
        """POST and read the whole reply. Raises :class:`WireError` (connection closed) on transport failure."""
        try:
            return self._post(path, content_type, body)
        except Exception as exc:
            self.close()
            if isinstance(exc, WireError):
                raise
            raise WireError(_classify(exc), f"{type(exc).__name__}: {exc}") from None

    def _post(self, path: bytes, content_type: bytes, body: bytes) -> Reply:
        sock = self.sock or self._connect()
        sock.sendall(b"POST %s%s HTTP/1.1\r\n%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                     % (self.prefix, path, self._host_line, content_type, len(body), body))
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
        head = buf[:end]
        if not head.startswith(b"HTTP/1."):
            raise WireError("bad_response", repr(head[:40]))
        m = _CONTENT_LENGTH.search(head)
        length = int(m.group(1)) if m else 0
        start = end + 4
        stop = start + length
        while len(buf) < stop:
            chunk = recv(65536)
            if not chunk:
                raise WireError("connection_closed", "the hub closed the connection mid-body")
            buf += chunk
        self._buf = buf[stop:]
        reply = Reply(int(head[9:12]), head, buf[start:stop])
        if _CLOSE.search(head):
            self.close()
        return reply
