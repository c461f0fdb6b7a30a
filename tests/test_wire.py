"""The swarm's HTTP client (``devicekit/httpclient.py``) reads the replies the hub sends and refuses, by name,
every reply it cannot frame or read; the swarm counts such a reply as a failure under that name."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from devicekit.fleet import generate_fleet
from devicekit.httpclient import Connection, Reply, WireError, body_length, parse_head
from loadgen import Authenticator, Recorder

OK_BODY = b'{"device_id":"d","challenge":"AAEC","expires_at":1.5}'
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Server-Timing: chain;dur=0.231, pop;dur=0.000\r\n\r\n%s" % (len(OK_BODY), OK_BODY)
)


class CannedServer:
    """Answers each request on one connection with the next canned reply, then closes."""

    def __init__(self, replies: list[bytes]):
        self.replies = replies
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            for reply in self.replies:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                _, found, after = head.lower().partition(b"content-length: ")
                length = int(after.split(b"\r\n")[0]) if found else 0
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(reply)
            time.sleep(0.2)

    def close(self):
        self.sock.close()
        self.thread.join(5)


def exchange(*replies: bytes) -> list:
    """POST once per canned reply over one connection: each Reply, or the WireError raised."""
    server = CannedServer(list(replies))
    conn = Connection(server.url, timeout=5)
    out = []
    try:
        for _ in replies:
            try:
                out.append(conn.post(b"/devices/challenge", b"application/x-pem-file", b"pem"))
            except WireError as exc:
                out.append(exc)
                break
    finally:
        conn.close()
        server.close()
    return out


# --- replies it reads -------------------------------------------------------------------------------------
def test_reads_replies_framed_by_content_length_over_one_keep_alive_connection():
    refusal = b'{"error":"throttled","message":"slow down"}'
    replies = exchange(
        OK,
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json; charset=utf-8\r\n"
        b"content-length: %d\r\nRetry-After: 2\r\n\r\n%s" % (len(refusal), refusal),
    )
    ok, throttled = replies
    assert (ok.status, ok.body) == (200, OK_BODY)
    assert ok.json()["challenge"] == "AAEC"
    assert ok.server_timing() == {"chain": 0.231, "pop": 0.0}
    assert ok.retry_after() is None
    assert throttled.status == 429 and throttled.retry_after() == 2.0
    assert throttled.json()["error"] == "throttled"


def test_a_reply_without_a_body_needs_no_length():
    status, headers = parse_head(b"HTTP/1.1 204 No Content\r\nServer: x")
    assert body_length(status, headers) == 0


def test_connection_close_closes_after_the_reply():
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    server = CannedServer([reply])
    conn = Connection(server.url, timeout=5)
    try:
        assert conn.post(b"/x", b"application/json", b"{}").json() == {}
        assert conn.sock is None
    finally:
        conn.close()
        server.close()


# --- replies it refuses, by name --------------------------------------------------------------------------
UNFRAMED = [
    (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "chunked_reply",
        "Transfer-Encoding 'chunked'",
    ),
    (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{}",
        "reply_without_length",
        "HTTP 200 reply has no Content-Length",
    ),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n{}", "bad_content_length", "Content-Length '2x'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}", "bad_content_length", "Content-Length '-1'"),
    (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{} ",
        "bad_content_length",
        "conflicting Content-Length headers",
    ),
    (b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 2\r\n\r\n{}", "bad_response", "malformed header line"),
    (b"ICY 200 OK\r\nContent-Length: 2\r\n\r\n{}", "bad_response", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}", "bad_response", "not an HTTP/1.x status line"),
]


@pytest.mark.parametrize("reply,code,detail", UNFRAMED, ids=[c for _, c, _ in UNFRAMED])
def test_a_reply_it_cannot_frame_raises_an_error_naming_the_problem(reply, code, detail):
    (error,) = exchange(reply)
    assert isinstance(error, WireError), error
    assert error.code == code and detail in str(error), str(error)


NOT_JSON = [
    (b"text/html", b"<html>hello</html>", "reply is 'text/html', not application/json"),
    (b"", b"{}", "reply is 'untyped'"),
    (b"application/json", b'{"challenge": ', "body is not JSON"),
    (b"application/json", b"[1, 2]", "body is JSON but not an object"),
]


@pytest.mark.parametrize("media,body,detail", NOT_JSON)
def test_a_body_that_is_not_a_json_object_raises_reply_not_json(media, body, detail):
    headers = {b"content-type": media} if media else {}
    with pytest.raises(WireError, match=detail) as error:
        Reply(200, headers, body).json()
    assert error.value.code == "reply_not_json"


# --- the swarm counts them as failures under that name -------------------------------------------------------
class FakeConnection:
    def __init__(self, reply: Reply):
        self.reply = reply

    def post(self, path, content_type, body):
        return self.reply


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return generate_fleet(tmp_path_factory.mktemp("fleet"), 2, depth=0, seed="wire", workers=1, progress=False)


JSON = {b"content-type": b"application/json"}
SWARM_CASES = [
    (Reply(200, {b"content-type": b"text/html"}, b"<p>maintenance</p>"), "challenge:reply_not_json"),
    (Reply(200, JSON, b'{"device_id":"d"}'), "challenge:reply_without_challenge"),
    (Reply(200, JSON, b'{"challenge":"not base64!"}'), "challenge:reply_without_challenge"),
    (Reply(502, {b"content-type": b"text/html"}, b"<p>bad gateway</p>"), "challenge:http_502"),
    (Reply(403, JSON, b'{"error":"chain_untrusted","message":"no"}'), "challenge:chain_untrusted"),
]


@pytest.mark.parametrize("reply,failure", SWARM_CASES, ids=[f for _, f in SWARM_CASES])
def test_the_swarm_counts_an_unreadable_reply_as_a_named_failure(fleet, reply, failure):
    events = []
    recorder = Recorder(fleet.count, time.time())
    auth = Authenticator(fleet, recorder, lambda **kw: events.append(kw))
    outcome = auth.authenticate(FakeConnection(reply), 0)
    assert not outcome.ok and f"{outcome.step}:{outcome.code}" == failure
    assert dict(recorder.failures) == {failure: 1} and recorder.counts["admitted"] == 0
    assert all(e["exception"] for e in events)  # no request counted as a success


# --- the administrative client -------------------------------------------------------------------------------
def test_the_admin_client_names_the_call_whose_reply_is_not_json():
    from devicekit.hubclient import HubClient, HubError

    body = b"<html>maintenance</html>"
    server = CannedServer(
        [b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]
    )
    try:
        with pytest.raises(HubError, match=r"GET /healthz: the reply is not a JSON object: 200 http_200 <html>"):
            HubClient(server.url, timeout=5).healthz()
    finally:
        server.close()
