"""Send one request exactly as a case describes it, over a raw socket, and read the hub's answer.

http.client would tidy requests up (add headers, refuse odd bytes, stop when the server stops reading),
so the corpus writes its own bytes: any method, path, header and body, a body announced far larger than
it will ever be read, or a chunked body that never ends. :func:`exchange` streams such bodies and keeps
sending after the hub answered, as an attacker would, to see whether the hub goes on reading.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str = "POST"
    path: str = "/devices/challenge"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes = b""
    stream: int = 0  # announce (Content-Length) or send (chunked) this many bytes instead of ``body``
    chunked: bool = False
    raw: bytes | None = None  # the whole request, as is

    def head(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [f"{self.method} {self.path} HTTP/1.1".encode("latin-1"), b"Host: hub"]
        lines += [name.encode("latin-1") + b": " + value for name, value in self.headers]
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif self.stream:
            lines.append(b"Content-Length: %d" % self.stream)
        elif self.method in ("POST", "PUT", "PATCH") or self.body:
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if self.stream or self.chunked else self.body)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int = 0  # body bytes the kernel accepted from us (streamed requests)
    closed: bool = False  # the hub closed the connection after answering
    seconds: float = 0.0

    def json(self):
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:200]!r}, sent={self.sent}, closed={self.closed})"


_CHUNK = 64 * 1024


def exchange(host: str, port: int, request: Request, *, timeout: float = 20.0) -> Reply:
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request.head())
        sent = 0
        if request.stream:
            sent = _stream(sock, request, timeout)
        reply = _read_reply(sock, timeout)
        reply.sent = sent
        if request.stream:
            # Keep sending, as a client that ignores the answer would, until the hub stops taking bytes.
            reply.sent += _stream(sock, request, timeout, already=sent, after_reply=True)
            reply.closed = _closed(sock)
        reply.seconds = time.monotonic() - start
        return reply
    finally:
        sock.close()


def _stream(
    sock: socket.socket, request: Request, timeout: float, *, already: int = 0, after_reply: bool = False
) -> int:
    """Send body bytes until the announced size, an answer from the hub (unless ``after_reply``), or
    an error; returns how many were sent."""
    total, sent = request.stream, already
    payload = b"A" * _CHUNK
    chunk = (b"%x\r\n" % _CHUNK) + payload + b"\r\n" if request.chunked else payload
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1.0)
            if readable and not after_reply:
                break
            if readable and after_reply:
                try:
                    if not sock.recv(65536, socket.MSG_PEEK):
                        break  # the hub closed its side
                except OSError:
                    break
            if writable:
                try:
                    n = sock.send(chunk)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
                sent += min(n, _CHUNK)
            elif not readable and after_reply:
                # Neither: the hub stopped reading (flow control). That is a bounded hub: stop too.
                break
    finally:
        sock.setblocking(True)
        sock.settimeout(timeout)
    return sent - already


def _read_reply(sock: socket.socket, timeout: float) -> Reply:
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        data = _recv(sock, deadline)
        if not data:
            if not buf:
                return Reply(0, {}, b"", closed=True)
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Reply(-1, {}, buf)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    length = headers.get("content-length")
    if length is not None:
        want = int(length)
        while len(rest) < want:
            data = _recv(sock, deadline)
            if not data:
                break
            rest += data
        body = rest[:want]
    else:
        while True:
            data = _recv(sock, deadline)
            if not data:
                break
            rest += data
        body = rest
    return Reply(status, headers, body)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    except TimeoutError:
        return b""


def _closed(sock: socket.socket, wait: float = 2.0) -> bool:
    """True if the hub closes (or resets) the connection within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False
