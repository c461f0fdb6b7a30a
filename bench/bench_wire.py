"""The swarm's HTTP client on the generator's side: what reading the two replies of one authentication
costs (framing both heads, both bodies as JSON, the challenge decoded, Server-Timing read).

A stub socket hands back replies shaped like the hub's, so the figure is the client's own work without
the kernel. The generator spends about 500 µs of CPU per authentication in all (docs/swarm.md): this is
the part the client's parsing adds to it.
"""

from __future__ import annotations

import base64
import os

from devicekit.httpclient import Connection, challenge_of, first_connection_of


def _reply(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Server-Timing: chain;dur=0.231, pop;dur=0.000\r\nDate: Mon, 30 Nov 2026 15:00:00 GMT\r\n\r\n%s"
        % (len(body), body)
    )


CHALLENGE = _reply(
    b'{"device_id":"device-0000012","challenge":"'
    + base64.b64encode(os.urandom(250))
    + b'","expires_at":1790000000.123}'
)
PROOF = _reply(b'{"device_id":"device-0000012","ca":"' + b"ab" * 32 + b'","first_connection":true}')


class _StubSocket:
    def __init__(self):
        self.reply = CHALLENGE

    def sendall(self, data: bytes) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return self.reply


def test_client_reads_one_authentication(benchmark, calibration):
    conn = Connection("http://127.0.0.1:8080")
    sock = conn.sock = _StubSocket()

    def one_authentication():
        sock.reply = CHALLENGE
        reply = conn.post(b"/devices/challenge", b"application/x-pem-file", b"pem")
        reply.server_timing()
        challenge_of(reply.json())
        sock.reply = PROOF
        reply = conn.post(b"/devices/proof", b"application/json", b"{}")
        reply.server_timing()
        return first_connection_of(reply.json())

    assert one_authentication() is True
    benchmark.pedantic(one_authentication, rounds=20, iterations=2000, warmup_rounds=1)
    calibration.record(benchmark)
