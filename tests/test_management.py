"""The management plane: only the operator's bearer token changes (or reads) the hub's trust configuration.

Refusals first: every management endpoint refuses a missing, malformed and wrong token, before it reads
a body, with 401, ``WWW-Authenticate`` and a JSON error, counted in /metrics; an address that keeps
presenting bad credentials is slowed down, by every worker; the hub will not start with a token file
others can read, nor serve an open management plane on a non-loopback address. Then: the right token
works, device endpoints need none, the audit log records exactly the acknowledged changes (also across a
kill -9 of the whole hub) and refuses to be rewritten, and the token never shows up in logs, metrics,
error bodies or the database.

Calls that present a bad credential count against their address, and ten of them lock it out. The tests
here send them from addresses of their own in 127.0.0.0/8 (all loopback on Linux), so that each one
starts with a clean slate.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import chaos
import pytest
from conftest import serve_hub
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from certstorm.processes import HubProcess, Reply
from devicekit.httpdevice import authenticate
from devicekit.pki import SupplyChain
from hubsim.service.credential import token_id
from hubsim.service.lockout import LockoutPolicy, SharedLockout, address_key, create_lockout_file
from hubsim.service.store import SCHEMA_VERSION, Store, initialise

ROOT = Path(__file__).resolve().parent.parent

PEM = serialization.Encoding.PEM
PEM_TYPE = {"Content-Type": "application/x-pem-file"}
JSON_TYPE = {"Content-Type": "application/json"}
_addresses = (f"127.{a}.{b}.{c}" for a, b, c in itertools.product(range(10, 250), range(1, 250), range(2, 250)))


def new_address() -> str:
    """A loopback source address no other call of this module used."""
    return next(_addresses)


def call_from(
    hub: HubProcess,
    source: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] = (),
    conn: http.client.HTTPConnection | None = None,
) -> Reply:
    """A request from ``source``, with exactly the headers given (several of one name allowed)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(hub.host, hub.port, timeout=10, source_address=(source, 0))
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        reply = conn.getresponse()
        return Reply(reply.status, reply.headers, reply.read())
    finally:
        if own:
            conn.close()


def metric(hub: HubProcess, name: str, **labels) -> float:
    body = hub.call("GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def bad_credentials(token: str) -> list[tuple[str, list[str]]]:
    """(the error code expected, the Authorization header values) for every way to get it wrong."""
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return [
        ("admin_token_missing", []),
        ("admin_token_malformed", ["Bearer"]),
        ("admin_token_malformed", ["Bearer "]),
        ("admin_token_malformed", [f"Basic {base64.b64encode(b'operator:' + token.encode()).decode()}"]),
        ("admin_token_malformed", [token]),  # no scheme
        ("admin_token_malformed", [f"Bearer {token[:20]} {token[20:]}"]),  # split in two
        ("admin_token_malformed", [f"Bearer {token}!"]),  # a character tokens never have
        ("admin_token_malformed", [f"Bearer {token}", f"Bearer {token}"]),  # two headers
        ("admin_token_malformed", ["Bearer " + "A" * 600]),  # longer than any token
        ("admin_token_invalid", [f"Bearer {flipped}"]),
        ("admin_token_invalid", [f"Bearer {token[:-1]}"]),
        ("admin_token_invalid", [f"Bearer {token}A"]),
        ("admin_token_invalid", ["Bearer " + "A" * 43]),
    ]


class Endpoints:
    """Every management endpoint with a body that would succeed, for one CA and one device."""

    def __init__(self):
        self.chain = SupplyChain.build(depth=1)
        self.ca_id = hashlib.sha256(self.chain.company.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.revoked = os.urandom(32).hex()
        self.code = ""

    def all(self) -> list[tuple[str, str, bytes | None, dict, int]]:
        """(method, path, body, headers, status of success), in an order in which each succeeds."""
        ca, company = self.ca_id, self.chain.company
        proof = company.verification_certificate(self.code).public_bytes(PEM) if self.code else b"-"
        return [
            ("POST", "/cas", company.certificate.public_bytes(PEM), PEM_TYPE, 201),
            ("GET", "/cas", None, {}, 200),
            ("GET", f"/cas/{ca}", None, {}, 200),
            ("POST", f"/cas/{ca}/verification-code", None, {}, 200),
            ("POST", f"/cas/{ca}/verify", proof, PEM_TYPE, 200),
            ("POST", "/revocations", json.dumps({"fingerprint": self.revoked}).encode(), JSON_TYPE, 201),
            ("GET", "/revocations", None, {}, 200),
            ("POST", "/devices/ops-1/disable", None, {}, 200),
            ("GET", "/devices/ops-1", None, {}, 200),
            ("POST", "/devices/ops-1/enable", None, {}, 200),
            ("GET", "/audit", None, {}, 200),
            ("DELETE", f"/cas/{ca}", None, {}, 200),
        ]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "management")


# -- refusals -----------------------------------------------------------------------------------------------
def test_every_management_endpoint_refuses_a_missing_malformed_or_wrong_token(hub):
    token = hub.admin_token()
    endpoints = Endpoints()
    bodies = []
    for method, path, body, headers, _ in endpoints.all():
        for code, values in bad_credentials(token):
            extra = [(name, value) for name, value in headers.items()]
            reply = call_from(hub, new_address(), method, path, body, extra + [("Authorization", v) for v in values])
            assert reply.status == 401, (method, path, values, reply)
            doc = reply.json()
            assert doc["error"] == code and doc["message"], (method, path, values, doc)
            challenge = reply.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="certstorm-hub"'), challenge
            assert ("error=" in challenge) == (code != "admin_token_missing"), challenge
            bodies.append(reply.body)
    # Nothing happened: no CA, no revocation, no disabled device, nothing in the audit log.
    assert hub.admin("GET", "/cas").json()["cas"] == []
    assert hub.admin("GET", "/revocations").json()["revocations"] == []
    assert hub.admin("GET", "/devices/ops-1").status == 404
    assert hub.admin("GET", "/audit").json()["entries"] == []
    assert not any(token.encode() in body or token[:-1].encode() in body for body in bodies)
    time.sleep(0.3)  # one metrics flush
    per_endpoint = len(endpoints.all())
    for code in ("admin_token_missing", "admin_token_malformed", "admin_token_invalid"):
        expected = per_endpoint * sum(1 for c, _ in bad_credentials(token) if c == code)
        assert metric(hub, "certstorm_management_refused_total", code=code) == expected, code


def test_a_device_named_like_a_device_step_cannot_be_read_without_the_token(hub):
    """/devices/challenge and /devices/proof are the device steps, open to devices: they answer POST only,
    never a management read of a device that happens to be named "challenge" or "proof"."""
    for step in ("challenge", "proof"):
        assert hub.admin("POST", f"/devices/{step}/disable").status == 200  # the device exists, disabled
        reply = hub.call("GET", f"/devices/{step}")
        assert reply.status == 405 and reply.json()["error"] == "method_not_allowed", reply
        assert reply.headers["Allow"] == "POST" and step.encode() not in reply.body.split(b'"message"')[0]
        assert hub.admin("GET", f"/devices/{step}").status == 405
        assert hub.admin("POST", f"/devices/{step}/enable").status == 200


def test_a_management_call_without_a_token_is_refused_before_its_body_is_read(hub):
    # 64 MiB announced: the refusal comes at once and the connection is closed, as for an oversized body.
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    try:
        sock.sendall(
            b"POST /cas HTTP/1.1\r\nHost: hub\r\nContent-Type: application/x-pem-file\r\n"
            b"Content-Length: 67108864\r\n\r\n" + b"A" * 65536
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
        assert b"connection: close" in answer.lower()
    finally:
        sock.close()


def test_the_right_token_works_on_every_management_endpoint_and_the_audit_log_has_each_change(hub):
    token = hub.admin_token()
    endpoints = Endpoints()
    source = new_address()
    results, proof = {}, None
    for i in range(len(endpoints.all())):
        method, path, body, headers, status = endpoints.all()[i]
        scheme = "bearer" if i % 2 else "Bearer"  # the scheme's case does not matter (RFC 7235)
        reply = call_from(hub, source, method, path, body, [*headers.items(), ("Authorization", f"{scheme} {token}")])
        assert reply.status == status, (method, path, reply)
        results[(method, path)] = reply.json()
        if path == f"/cas/{endpoints.ca_id}/verification-code":
            endpoints.code = reply.json()["verification_code"]
        if path.endswith("/verify"):
            proof = hashlib.sha256(
                x509.load_pem_x509_certificate(body).public_bytes(serialization.Encoding.DER)
            ).hexdigest()
    ca = endpoints.ca_id
    entries = [
        e for e in hub.admin("GET", "/audit").json()["entries"] if e["target"] in (ca, "ops-1", endpoints.revoked)
    ]
    assert [(e["action"], e["target"], e["fingerprints"]) for e in entries] == [
        ("ca.register", ca, [ca]),
        ("ca.new_code", ca, [ca]),
        ("ca.verify", ca, [ca, proof]),
        ("revocation.add", endpoints.revoked, [endpoints.revoked]),
        ("device.disable", "ops-1", []),
        ("device.enable", "ops-1", []),
        ("ca.remove", ca, [ca]),
    ]
    assert {(e["peer"], e["token_id"]) for e in entries} == {(source, token_id(token))}
    assert entries[0]["detail"] == {"subject": "CN=Company-X"} and entries[2]["detail"] == {"proof": "certificate"}
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert all(e["at"] <= time.time() for e in entries)


def test_the_audit_log_pages_and_refuses_bad_queries(hub):
    for n in range(5):
        assert hub.admin("POST", f"/devices/page-{n}/disable").status == 200
    everything = hub.admin("GET", "/audit?limit=10000").json()["entries"]
    pages, after = [], 0
    while True:
        doc = hub.admin("GET", f"/audit?after={after}&limit=2").json()
        if not doc["entries"]:
            break
        assert len(doc["entries"]) <= 2
        pages += doc["entries"]
        after = doc["next"]
    assert pages == everything and len(everything) >= 5
    for query in ("limit=0", "limit=10001", "limit=x", "after=-1", "after=1.5", "limit=%EF%BC%91"):
        reply = hub.admin("GET", f"/audit?{query}")
        assert (reply.status, reply.json()["error"]) == (400, "malformed_input"), (query, reply)


def test_device_endpoints_need_no_token_and_ignore_one(hub):
    chain = SupplyChain.build(depth=2)
    from devicekit.httpdevice import register_and_prove

    register_and_prove(hub, chain.company)
    conn = hub.connect()
    try:  # the device fast path, no Authorization header at all
        assert authenticate(conn, chain.device("no-token"))["device_id"] == "no-token"
    finally:
        conn.close()
    # Through aiohttp (a query string moves the request off the fast path), and with a junk
    # Authorization header from an address that is locked out of the management plane: devices are
    # neither asked for a credential nor slowed down by the management gate.
    source = new_address()
    for _ in range(12):
        call_from(hub, source, "GET", "/cas", headers=[("Authorization", "Bearer " + "B" * 43)])
    assert (
        call_from(hub, source, "GET", "/cas", headers=[("Authorization", "Bearer " + hub.admin_token())]).status == 429
    )
    device = chain.device("junk-token")
    junk = [("Authorization", "Bearer " + "B" * 43), ("Content-Type", "application/x-pem-file")]
    issued = call_from(hub, source, "POST", "/devices/challenge?via=aiohttp", device.chain_pem(), junk)
    assert issued.status == 200, issued
    challenge = issued.json()["challenge"]
    proof = json.dumps(
        {"challenge": challenge, "signature": base64.b64encode(device.sign(base64.b64decode(challenge))).decode()}
    ).encode()
    admitted = call_from(
        hub, source, "POST", "/devices/proof", proof, [*junk[:1], ("Content-Type", "application/json")]
    )
    assert admitted.status == 200 and admitted.json()["device_id"] == "junk-token", admitted
    for path in ("/healthz", "/metrics", "/"):  # public on purpose (docs/api.md says why)
        assert call_from(hub, source, "GET", path).status == 200, path


# -- slowing down guessing ----------------------------------------------------------------------------------
def connections_to_every_worker(hub: HubProcess, source: str) -> list[http.client.HTTPConnection]:
    """One keep-alive connection from ``source`` to each worker."""
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(400):
        conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10, source_address=(source, 0))
        pid = json.loads(call_from(hub, source, "GET", "/healthz", conn=conn).body)["pid"]
        if pid in found:
            conn.close()
        else:
            found[pid] = conn
        if len(found) == hub.workers:
            return list(found.values())
    raise AssertionError("could not reach every worker")


def test_repeated_bad_tokens_from_one_address_are_slowed_down_by_every_worker(hub):
    token, policy = hub.admin_token(), LockoutPolicy()
    source = new_address()
    first, second = connections_to_every_worker(hub, source)
    wrong = [("Authorization", "Bearer " + "C" * 43)]
    right = [("Authorization", f"Bearer {token}")]
    time.sleep(0.3)  # earlier tests' refusals reach the metrics
    before = metric(hub, "certstorm_management_refused_total", code="admin_locked_out")
    # Half the allowance on each worker: only a count both share can tell that the address is done.
    for n in range(int(policy.burst)):
        reply = call_from(hub, source, "GET", "/audit", headers=wrong, conn=(first, second)[n % 2])
        assert reply.status == 401, (n, reply)
    for conn in (first, second):
        reply = call_from(hub, source, "GET", "/audit", headers=right, conn=conn)  # even the right token
        assert reply.status == 429 and reply.json()["error"] == "admin_locked_out", reply
        assert 1 <= int(reply.headers["Retry-After"]) <= 1 / policy.drain_per_second + 1, reply.headers
        assert token not in reply.body.decode()
    # Another address is not affected; nor are calls without a credential counted.
    other = new_address()
    for _ in range(int(policy.burst) + 5):
        assert call_from(hub, other, "GET", "/audit").status == 401
    assert call_from(hub, other, "GET", "/audit", headers=right).status == 200
    # After Retry-After the address gets one more try.
    wait = int(call_from(hub, source, "GET", "/audit", headers=right, conn=first).headers["Retry-After"])
    time.sleep(wait + 0.1)
    assert call_from(hub, source, "GET", "/audit", headers=right, conn=second).status == 200
    for conn in (first, second):
        conn.close()
    time.sleep(0.3)
    assert metric(hub, "certstorm_management_refused_total", code="admin_locked_out") == before + 3


def test_the_lockout_table_drains_and_counts_ipv6_by_prefix(tmp_path):
    path = str(tmp_path / "lockout")
    create_lockout_file(path, LockoutPolicy(burst=3, drain_per_second=0.5))
    now = [100.0]
    table = SharedLockout(path, clock=lambda: now[0])
    assert [table.fail("10.0.0.1") for _ in range(2)] == [0.0, 0.0]
    assert table.wait("10.0.0.1") == 0.0
    assert table.fail("10.0.0.1") == pytest.approx(2.0)  # the third: wait until it drained below the burst
    assert table.wait("10.0.0.1") == pytest.approx(2.0) and table.wait("10.0.0.2") == 0.0
    now[0] += 1.0
    assert table.wait("10.0.0.1") == pytest.approx(1.0)
    now[0] += 1.0
    assert table.wait("10.0.0.1") == 0.0
    # One IPv6 /64 is one address; the IPv4-mapped form of an IPv4 address is that address.
    for host in ("2001:db8::1", "2001:db8::ffff:2", "2001:db8:0:0:8000::3"):
        table.fail(host)
    assert table.wait("2001:db8::99") > 0 and table.wait("2001:db8:0:1::1") == 0.0
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")
    # Many other addresses cannot push a locked address out of the table.
    for n in range(5000):
        table.fail(f"10.1.{n // 250}.{n % 250}")
    assert table.wait("2001:db8::99") > 0
    table.close()


# -- start-up -------------------------------------------------------------------------------------------------
def start_hub(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """A hub that is expected to refuse to start (it would serve otherwise: a timeout fails the test)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hubsim.service",
            "--port",
            "0",
            "--workers",
            "1",
            "--db",
            str(tmp_path / "hub.db"),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_generated_token_file_is_owner_only_and_named_but_never_printed(hub):
    path = Path(hub.admin_token_path)
    assert path == Path(hub.db + ".admin-token")
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    token = hub.admin_token()
    assert len(token) == 43 and len(base64.urlsafe_b64decode(token + "=")) == 32
    out = hub.log()
    assert f"the token is in {path}" in out and f"(id {token_id(token)})" in out
    assert token not in out


@pytest.mark.parametrize(
    "args,message",
    [
        (("--host", "0.0.0.0", "--management", "open"), "--management open would let anyone who reaches 0.0.0.0"),
        (("--host", "::", "--management", "open"), "allowed on loopback addresses only"),
        (("--management", "open", "--admin-token-file", "x"), "--admin-token-file needs --management token"),
        (("--management", "maybe"), "invalid choice: 'maybe'"),
    ],
)
def test_the_hub_refuses_to_start_with_an_unguarded_or_contradictory_management_plane(tmp_path, args, message):
    done = start_hub(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stdout


def test_a_token_file_others_can_read_or_a_weak_token_is_refused(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("Z" * 40 + "\n")
    token_file.chmod(0o644)
    done = start_hub(tmp_path, "--admin-token-file", str(token_file))
    assert (
        done.returncode == 2
        and f"readable or writable by group or others (mode 0644); chmod 600 {token_file}" in done.stderr
    ), done.stderr
    token_file.chmod(0o600)
    token_file.write_text("short\n")
    done = start_hub(tmp_path, "--admin-token-file", str(token_file))
    assert done.returncode == 2 and "the token must be 32 to 512 characters" in done.stderr, done.stderr
    done = start_hub(tmp_path, "--admin-token-file", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no such file" in done.stderr, done.stderr
    # The generated file, made readable by others after the fact: refused too, not silently used.
    generated = Path(str(tmp_path / "hub.db") + ".admin-token")
    assert not generated.exists()
    with HubProcess(tmp_path / "hub.db", workers=1):
        pass
    generated.chmod(0o640)
    done = start_hub(tmp_path)
    assert done.returncode == 2 and "chmod 600" in done.stderr and "delete it to make a new one" in done.stderr


def test_a_supplied_token_file_is_used_and_survives_restarts(tmp_path):
    token_file = tmp_path / "operator.token"
    token_file.write_text("Op3rator-" + "x" * 40 + "\n")
    token_file.chmod(0o600)
    for _ in range(2):
        with HubProcess(tmp_path / "hub.db", workers=1, args=("--admin-token-file", str(token_file))) as hub:
            assert hub.admin_token() == "Op3rator-" + "x" * 40
            assert hub.admin("GET", "/cas").status == 200
            assert hub.call("GET", "/cas", token="Op3rator-" + "y" * 40).status == 401
    assert not Path(str(tmp_path / "hub.db") + ".admin-token").exists()


def test_open_management_on_loopback_and_management_off(tmp_path):
    with HubProcess(tmp_path / "open.db", workers=1, args=("--management", "open")) as hub:
        assert "open to anyone who reaches this loopback address" in hub.log()
        assert hub.call("POST", "/devices/open-1/disable").status == 200
        entry = hub.call("GET", "/audit").json()["entries"][-1]
        assert (entry["action"], entry["token_id"], entry["peer"]) == ("device.disable", None, "127.0.0.1")
        assert not Path(str(tmp_path / "open.db") + ".admin-token").exists()
    with HubProcess(tmp_path / "off.db", workers=1, args=("--management", "off")) as hub:
        for method, path in (("GET", "/cas"), ("POST", "/devices/off-1/disable"), ("GET", "/audit")):
            reply = hub.call(method, path)
            assert (reply.status, reply.json()["error"]) == (403, "management_disabled"), reply
        assert hub.call("GET", "/healthz").status == 200


# -- the audit log ------------------------------------------------------------------------------------------
def test_the_audit_log_holds_exactly_the_acknowledged_changes_after_a_kill_9(tmp_path):
    port = chaos.free_port()
    hub = HubProcess(tmp_path / "hub.db", workers=2, args=("--port", str(port))).start()
    try:
        acknowledged = []
        for n in range(6):
            chain = SupplyChain.build(depth=0)
            reply = hub.admin("POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
            assert reply.status == 201
            acknowledged.append(("ca.register", reply.json()["id"]))
            again = hub.admin("POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
            assert again.status == 409  # refused: not a change
            fp = os.urandom(32).hex()
            assert hub.admin("POST", "/revocations", json_body={"fingerprint": fp}).status == 201
            acknowledged.append(("revocation.add", fp))
            assert hub.admin("POST", f"/devices/kill-{n}/disable").status == 200
            acknowledged.append(("device.disable", f"kill-{n}"))
        # Refused calls change nothing and leave nothing in the log.
        assert hub.call("POST", "/devices/kill-0/enable").status == 401
        assert hub.admin("DELETE", "/cas/" + "0" * 64).status == 404
        chaos.kill_whole_hub(hub)
        hub = HubProcess(tmp_path / "hub.db", workers=2, args=("--port", str(port))).start()
        entries = chaos.audit_log(hub)
        assert [(e["action"], e["target"]) for e in entries] == acknowledged
        assert chaos.check_audit(entries, acknowledged, [], token_id(hub.admin_token())) == 0
    finally:
        hub.stop()
        hub.kill()


def test_the_audit_log_is_append_only(tmp_path):
    db = str(tmp_path / "hub.db")
    initialise(db)
    store = Store(db)
    try:
        store.set_disabled("dev-a", True, 1.0, ("127.0.0.1", "sha256:0"))
        for statement in ("UPDATE audit SET peer = 'elsewhere'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                store.admin.execute(statement)
        assert [(e["peer"], e["action"]) for e in store.audit()] == [("127.0.0.1", "device.disable")]
    finally:
        store.close()


def test_a_write_another_worker_beat_us_to_is_not_audited(tmp_path):
    # What two workers racing on one CA leave in the store: the loser's write changes nothing, is
    # refused, and must not appear in the audit log.
    from hubsim import AuthEngine

    db = str(tmp_path / "hub.db")
    initialise(db)
    store, engine = Store(db), AuthEngine(secret=b"s" * 32, clock=time.time, random=os.urandom)
    operator = ("127.0.0.1", "sha256:0")
    try:
        record = engine.register_ca(SupplyChain.build(depth=0).company.certificate.public_bytes(PEM))
        assert store.insert_ca(record, 1.0, operator) and not store.insert_ca(record, 2.0, operator)
        stale_code = record.verification_code
        assert store.update_ca_code(engine.new_verification_code(record.id), 3.0, operator)
        assert not store.mark_ca_verified(record, stale_code, 4.0, operator, None)
        assert store.delete_ca(record.id, 5.0, operator) and not store.delete_ca(record.id, 6.0, operator)
        assert not store.update_ca_code(record, 7.0, operator)
        store.insert_revocation("ab" * 32, 8.0, operator)
        store.insert_revocation("ab" * 32, 9.0, operator)  # acknowledged again, so audited again
        assert [(e["action"], e["at"]) for e in store.audit()] == [
            ("ca.register", 1.0),
            ("ca.new_code", 3.0),
            ("ca.remove", 5.0),
            ("revocation.add", 8.0),
            ("revocation.add", 9.0),
        ]
    finally:
        store.close()


def test_a_database_from_before_the_audit_log_is_upgraded(tmp_path):
    db = str(tmp_path / "old.db")
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);INSERT INTO meta VALUES ('schema', '1');")
    con.close()
    initialise(db)
    store = Store(db)
    try:
        assert store.admin.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (SCHEMA_VERSION,)
        assert store.audit() == [] and store.identity("dev-1") is None
    finally:
        store.close()


# -- the token stays secret -----------------------------------------------------------------------------------
def test_no_token_value_appears_in_logs_metrics_error_bodies_or_the_database(hub):
    token = hub.admin_token()
    near_misses = [token[:-1] + "Q", token + "Q", token[:32]]
    bodies = []
    for guess in near_misses:
        bodies.append(
            call_from(
                hub,
                new_address(),
                "POST",
                "/revocations",
                b"{}",
                [("Authorization", f"Bearer {guess}"), ("Content-Type", "application/json")],
            ).body
        )
    bodies.append(hub.admin("POST", "/revocations", json_body={"fingerprint": "nope"}).body)
    bodies.append(hub.admin("GET", "/nowhere/at/all").body)
    bodies.append(hub.call("GET", "/metrics").body)
    bodies.append(hub.admin("GET", "/audit").body)
    bodies.append(hub.call("GET", "/healthz").body)
    time.sleep(0.3)
    bodies.append(hub.call("GET", "/metrics").body)
    db = Path(hub.db)
    files = [p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}.guard")) if p.exists()]
    haystacks = bodies + files + [hub.log().encode()]
    for needle in [token, *near_misses]:
        assert not any(needle.encode() in h for h in haystacks), needle[:4]
