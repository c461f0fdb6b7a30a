"""The device hot path: a strict HTTP/1.1 reader for the two device endpoints, in front of aiohttp.

A device authentication is two requests, and aiohttp's per-request machinery would cost more than the
two signature verifications they serve (docs/design.md). So each new connection starts on
:class:`DeviceProtocol`, which answers a request itself only when it is exactly ``POST
/devices/challenge HTTP/1.1`` or ``POST /devices/proof HTTP/1.1`` with CRLF line ends, one plain
``Content-Length`` within the endpoint's limit, no ``Transfer-Encoding``, ``Content-Encoding`` or
``Upgrade``, and at most ``Expect: 100-continue`` (answered here, as older curl needs). The engine is
synchronous, so such a request is handled inside ``data_received``: no task, no future. Anything else
hands the connection, with every byte not yet answered, to aiohttp for the rest of its life, where the
same :class:`~hubsim.service.httpapi.HttpApi` answers it: no request is refused for being unusual here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from email.utils import formatdate
from http import HTTPStatus
from time import monotonic, perf_counter, time

from aiohttp import web

from hubsim.errors import AuthError
from hubsim.service.codec import JSON_LIMIT, JSON_TYPES, PEM_TYPES, DeviceReply
from hubsim.service.hub import Hub

log = logging.getLogger("certstorm.hub")

MAX_HEAD = 8192
_CHALLENGE = b"POST /devices/challenge HTTP/1.1"
_PROOF = b"POST /devices/proof HTTP/1.1"
# The headers the fast path acts on (names lower-cased); every other header is ignored.
_INTERESTING = re.compile(
    rb"\r\n(content-length|content-type|connection|transfer-encoding|expect|content-encoding"
    rb"|upgrade):([^\r]*)"
)
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_INTERNAL = b'{"error": "internal_error", "message": "The hub failed; the error is in its log."}'


class _Clock:
    """The Date header, formatted once per second."""

    __slots__ = ("header", "second")

    def __init__(self):
        self.second = -1
        self.header = b""

    def date(self) -> bytes:
        now = time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.header


_clock = _Clock()


def encode_reply(reply: DeviceReply, close: bool) -> bytes:
    head = [
        _STATUS_LINES[reply.status],
        b"Content-Type: application/json\r\nContent-Length: ",
        str(len(reply.body)).encode(),
        b"\r\nServer-Timing: ",
        reply.timing.encode(),
        b"\r\n",
        _clock.date(),
    ]
    if reply.retry_after is not None:
        head.append(b"Retry-After: " + reply.retry_after.encode() + b"\r\n")
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(reply.body)
    return b"".join(head)


class DeviceProtocol(asyncio.Protocol):
    """One client connection, answered here until something needs aiohttp (see the module docstring)."""

    __slots__ = ("_buffer", "_continued", "_paused", "connections", "hub", "last_active", "server", "transport")

    def __init__(self, hub: Hub, server: web.Server, connections: set):
        self.hub = hub
        self.server = server
        self.connections = connections
        self.transport = None
        self.last_active = 0.0
        self._buffer = b""
        self._paused = False
        self._continued = False  # 100 Continue already sent for the request being read

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last_active = monotonic()
        self.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self.transport = None
        self._buffer = b""

    # Back-pressure: a client that does not read its replies stops being read.
    def pause_writing(self) -> None:
        self._paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_active = monotonic()
        buf = self._buffer + data if self._buffer else data
        transport = self.transport
        hub = self.hub
        while buf:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD or b"\n\n" in buf or not buf.startswith(b"POST /devices/"[: len(buf)]):
                    return self._handoff(buf, "request_line")
                break
            first = buf.find(b"\r\n")
            line = buf[:first]
            if line == _PROOF:
                proof = True
            elif line == _CHALLENGE:
                proof = False
            else:
                return self._handoff(buf, "request_line")
            # Header lines, each ending CRLF: token name, colon, printable value. Anything looser
            # (obs-fold, whitespace before the colon, control bytes) is aiohttp's to judge.
            head = buf[first + 2 : end + 2]
            if not _HEADER_LINES.fullmatch(head):
                return self._handoff(buf, "header_syntax")
            length = None
            media = b""
            close = False
            expect = False
            for name, value in _INTERESTING.findall(b"\r\n" + head.lower()):
                if name == b"content-length":
                    value = value.strip()
                    if length is not None or not value.isdigit() or len(value) > 9:
                        return self._handoff(buf, "content_length")  # two lengths, or a strange one
                    length = int(value)
                elif name == b"content-type":
                    media = value
                elif name == b"connection":
                    value = value.strip()
                    if value == b"close":
                        close = True
                    elif value != b"keep-alive":
                        return self._handoff(buf, "connection")
                elif name == b"expect" and value.strip() == b"100-continue" and not expect:
                    expect = True
                else:  # transfer-encoding, content-encoding, upgrade, another expectation
                    return self._handoff(buf, name.decode("latin-1"))
            if length is None or length > (JSON_LIMIT if proof else hub.chain_limit):
                return self._handoff(buf, "content_length")  # aiohttp answers 413 or frames it
            total = end + 4 + length
            if len(buf) < total:
                if expect and not self._continued:
                    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self._continued = True
                break
            self._continued = False
            body = buf[end + 4 : total]
            buf = buf[total:]
            transport.write(self._answer(proof, body, media, close))
            if close:
                transport.close()
                buf = b""
                break
        self._buffer = buf

    def _answer(self, proof: bool, body: bytes, media: bytes, close: bool) -> bytes:
        hub = self.hub
        start = perf_counter()
        endpoint = "proof" if proof else "challenge"
        try:
            hub.catch_up()
            reply = None if proof else hub.throttle()
            if reply is None:
                kind = media.split(b";", 1)[0].strip().lower().decode("latin-1") if media else ""
                if kind not in (JSON_TYPES if proof else PEM_TYPES):
                    reply = hub.refusal(
                        endpoint,
                        AuthError(
                            "unsupported_media_type",
                            f"Content-Type {media.strip().decode('latin-1')!r} is not accepted here",
                        ),
                    )
                else:
                    reply = hub.proof(body) if proof else hub.challenge(body)
        except Exception:
            log.exception("unexpected error in POST /devices/%s", endpoint)
            reply = DeviceReply(500, _INTERNAL, "chain;dur=0.000, pop;dur=0.000", None)
        hub.metrics.request(endpoint, reply.status, perf_counter() - start)
        return encode_reply(reply, close)

    def close_if_idle(self, since: float) -> bool:
        """Close the connection if nothing arrived after ``since`` (a monotonic time)."""
        if self.transport is not None and self.last_active < since:
            self.transport.close()
            return True
        return False

    def _handoff(self, pending: bytes, reason: str) -> None:
        """Give this connection to aiohttp from here on, with the bytes not yet answered."""
        self.hub.metrics.handoff(reason)
        transport = self.transport
        self.connections.discard(self)
        self._buffer = b""
        handler = self.server()  # aiohttp's RequestHandler, as its own server would have made it
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused:  # we had stopped reading; aiohttp does its own write flow control
            handler.pause_writing()
            transport.resume_reading()
        if pending:
            handler.data_received(pending)


__all__ = ["MAX_HEAD", "DeviceProtocol", "encode_reply"]
