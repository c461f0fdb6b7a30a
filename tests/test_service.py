"""The hub as a service: the real supervisor and two workers in a subprocess, driven over HTTP.

Refusals first, then the happy paths, then what only several processes can get wrong: replays sent to
another worker, revocations and removals seen by every worker, first connections counted once, state
surviving a restart and a worker killed under the supervisor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
from conftest import serve_hub
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from certstorm.processes import HubProcess
from devicekit.pki import SupplyChain
from hubsim.service.quota import parse_quota

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
TIMING = re.compile(r"^chain;dur=\d+\.\d{3}, pop;dur=\d+\.\d{3}$")
PEM_TYPE = {"Content-Type": "application/x-pem-file"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(DER)).hexdigest()


def refused(reply, status: int, code: str):
    assert reply.status == status, reply
    doc = reply.json()
    assert doc["error"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"]
    assert reply.headers["Content-Type"].startswith("application/json")
    return doc


def register(hub, chain: SupplyChain, *, verify: bool = True) -> dict:
    reply = hub.admin("POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert reply.status == 201, reply
    doc = reply.json()
    if verify:
        proof = chain.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
        reply = hub.admin("POST", f"/cas/{doc['id']}/verify", proof, headers=PEM_TYPE)
        assert reply.status == 200 and reply.json()["status"] == "verified", reply
    return doc


def challenge(hub, device, conn=None) -> dict:
    reply = hub.call("POST", "/devices/challenge", device.chain_pem(), headers=PEM_TYPE, conn=conn)
    assert reply.status == 200, reply
    assert TIMING.match(reply.headers["Server-Timing"])
    return reply.json()


def proof_body(device, issued: dict) -> dict:
    return {"challenge": issued["challenge"], "signature": b64(device.sign(base64.b64decode(issued["challenge"])))}


def prove(hub, body: dict, conn=None):
    reply = hub.call("POST", "/devices/proof", json_body=body, conn=conn)
    assert TIMING.match(reply.headers["Server-Timing"]), reply.headers
    return reply


def authenticate(hub, device, conn=None) -> dict:
    reply = prove(hub, proof_body(device, challenge(hub, device, conn)), conn)
    assert reply.status == 200, reply
    return reply.json()


def metric_values(hub) -> dict:
    reply = hub.call("GET", "/metrics")
    assert reply.status == 200
    values = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(check, timeout: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "hub")


@pytest.fixture(scope="module")
def fleet(hub):
    chain = SupplyChain.build(depth=2)
    register(hub, chain)
    return chain


@pytest.fixture
def workers(hub):
    connections = hub.worker_connections()
    yield list(connections.values())
    for conn in connections.values():
        conn.close()


# -- refusals --------------------------------------------------------------------------------------------
def test_unknown_endpoints_and_methods(hub):
    refused(hub.call("GET", "/nowhere"), 404, "not_found")
    reply = hub.admin("PUT", "/cas")
    refused(reply, 405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET, POST"
    refused(hub.call("PUT", "/devices/proof"), 405, "method_not_allowed")
    refused(hub.admin("GET", "/devices/proof/extra"), 404, "not_found")


def stored_cas(hub) -> list[dict]:
    reply = hub.admin("GET", "/cas")
    assert reply.status == 200, reply
    return reply.json()["cas"]


def test_ca_upload_refusals(hub, issuers):
    chain = issuers()
    before = stored_cas(hub)
    device = chain.device("not-a-ca")
    refused(hub.admin("POST", "/cas", device.certificate.public_bytes(PEM)), 400, "not_a_ca")
    refused(hub.admin("POST", "/cas", chain.company.certificate.public_bytes(PEM)), 409, "ca_exists")
    refused(hub.admin("POST", "/cas", b"certainly not a certificate"), 400, "malformed_input")
    refused(hub.admin("POST", "/cas", b""), 400, "malformed_input")
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    refused(hub.admin("POST", "/cas", key), 400, "private_key_in_upload")
    refused(hub.admin("POST", "/cas", b"-" * (64 * 1024)), 413, "upload_too_large")
    refused(
        hub.admin("POST", "/cas", b"{}", headers={"Content-Type": "application/json"}), 415, "unsupported_media_type"
    )
    refused(
        hub.admin("POST", "/cas", b"x", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        415,
        "unsupported_media_type",
    )
    assert stored_cas(hub) == before  # no refused upload left a CA row or changed one


def test_ca_verification_refusals(hub):
    chain, impostor = SupplyChain.build(depth=0), SupplyChain.build(depth=0)
    doc = register(hub, chain, verify=False)
    path = f"/cas/{doc['id']}/verify"
    refused(hub.admin("POST", "/cas/" + "0" * 64 + "/verify", b"{}"), 404, "ca_not_found")
    wrong_code = chain.company.verification_certificate("f" * 64).public_bytes(PEM)
    refused(hub.admin("POST", path, wrong_code), 400, "verification_code_mismatch")
    forged = impostor.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    refused(hub.admin("POST", path, forged), 401, "verification_signature_invalid")
    refused(
        hub.admin("POST", path, json_body={"signature": b64(impostor.company.sign_code(doc["verification_code"]))}),
        401,
        "verification_signature_invalid",
    )
    refused(hub.admin("POST", path, json_body={"signature": "%%% not base64"}), 400, "malformed_input")
    refused(hub.admin("POST", path, json_body=["signature"]), 400, "malformed_input")
    refused(hub.admin("POST", path, b"garbage"), 400, "malformed_input")
    # A refused attempt leaves the code usable.
    good = chain.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    assert hub.admin("POST", path, good).status == 200
    refused(hub.admin("POST", path, good), 409, "ca_already_verified")
    refused(hub.admin("POST", f"/cas/{doc['id']}/verification-code"), 409, "ca_already_verified")


def test_device_refusals(hub, issuers):
    fleet = issuers()
    unverified = SupplyChain.build(depth=1)
    register(hub, unverified, verify=False)
    refused(hub.call("POST", "/devices/challenge", unverified.device("u-1").chain_pem()), 401, "chain_untrusted")
    stranger = SupplyChain.build(depth=1).device("s-1")
    refused(hub.call("POST", "/devices/challenge", stranger.chain_pem()), 401, "chain_untrusted")
    refused(hub.call("POST", "/devices/challenge", fleet.company.certificate.public_bytes(PEM)), 401, "leaf_is_ca")
    # The issuing custodian's own certificate as a device, with the rest of its path (cached after a sibling)
    custodian = b"".join(c.public_bytes(PEM) for c in fleet.intermediates())
    refused(hub.call("POST", "/devices/challenge", custodian), 401, "leaf_is_ca")
    refused(hub.call("POST", "/devices/challenge", b"junk"), 400, "malformed_input")
    refused(hub.call("POST", "/devices/challenge", b""), 400, "malformed_input")
    refused(hub.call("POST", "/devices/challenge", b"A" * (40 * 1024)), 413, "upload_too_large")
    refused(
        hub.call("POST", "/devices/challenge", b"{}", headers={"Content-Type": "application/json"}),
        415,
        "unsupported_media_type",
    )

    device, other = fleet.device("refused-1"), fleet.device("refused-2")
    issued = challenge(hub, device)
    token = base64.b64decode(issued["challenge"])
    wrong_key = {"challenge": issued["challenge"], "signature": b64(other.sign(token))}
    refused(prove(hub, wrong_key), 401, "pop_invalid")
    tampered = bytearray(token)
    tampered[20] ^= 1
    refused(
        prove(hub, {"challenge": b64(bytes(tampered)), "signature": b64(device.sign(bytes(tampered)))}),
        401,
        "challenge_invalid",
    )
    refused(prove(hub, {"challenge": "AAAA", "signature": "AAAA"}), 401, "challenge_invalid")
    for body in (
        {"challenge": issued["challenge"]},
        {"challenge": 5, "signature": "AA=="},
        {"challenge": "***", "signature": "AA=="},
        [1, 2],
    ):
        refused(prove(hub, body), 400, "malformed_input")
    for raw in (b"not json", b"", b'{"challenge": "x"'):
        refused(
            hub.call("POST", "/devices/proof", raw, headers={"Content-Type": "application/json"}),
            400,
            "malformed_input",
        )
    refused(
        hub.call("POST", "/devices/proof", b"x", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        415,
        "unsupported_media_type",
    )
    # The refusals above did not consume the challenge: the right signature still works, once.
    body = proof_body(device, issued)
    assert prove(hub, body).status == 200
    refused(prove(hub, body), 401, "challenge_used")


def test_certificates_cryptography_parses_only_lazily_are_refused_as_malformed(hub, issuers):
    fleet = issuers()
    before = stored_cas(hub)
    # An impossible version number, and a subject whose UTF8String is not UTF-8: cryptography accepts
    # both at load time or at first access with errors the engine does not expect; they are the
    # upload's fault all the same.
    ca_der = fleet.company.certificate.public_bytes(DER)
    bad_version = ca_der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x19", 1)
    bad_subject = ca_der.replace(b"\x0c\x09Company-X", b"\x0c\x09\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7")
    assert bad_version != ca_der and bad_subject != ca_der
    for body in (bad_version, bad_subject):
        refused(hub.admin("POST", "/cas", body), 400, "malformed_input")
    assert stored_cas(hub) == before
    device_der = fleet.device("bad-version").certificate.public_bytes(DER)
    bad_leaf = device_der.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x19", 1)
    refused(hub.call("POST", "/devices/challenge", bad_leaf), 400, "malformed_input")


def test_error_responses_on_the_device_path_carry_server_timing(hub):
    reply = hub.call("POST", "/devices/challenge", b"junk")
    assert TIMING.match(reply.headers["Server-Timing"])
    reply = hub.call("POST", "/devices/proof", b"{}", headers={"Content-Type": "application/json"})
    assert TIMING.match(reply.headers["Server-Timing"])


# -- CAs -------------------------------------------------------------------------------------------------
def test_ca_lifecycle_with_pem_der_certificate_and_signature_proofs(hub):
    first, second = SupplyChain.build(depth=1), SupplyChain.build(depth=1)
    reply = hub.admin("POST", "/cas", first.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert reply.status == 201, reply
    doc = reply.json()
    assert doc["id"] == fingerprint(first.company.certificate)
    assert doc["subject"] == "CN=Company-X" and doc["status"] == "unverified"
    assert re.fullmatch(r"[0-9a-f]{64}", doc["verification_code"])
    assert reply.headers["Location"] == f"/cas/{doc['id']}"
    listed = {ca["id"]: ca for ca in hub.admin("GET", "/cas").json()["cas"]}
    assert listed[doc["id"]]["status"] == "unverified"
    detail = hub.admin("GET", f"/cas/{doc['id'].upper()}").json()
    assert x509.load_pem_x509_certificate(detail["certificate"].encode()) == first.company.certificate
    assert detail["verification_code"] == doc["verification_code"]

    # A new code replaces the old one.
    renewed = hub.admin("POST", f"/cas/{doc['id']}/verification-code").json()["verification_code"]
    assert renewed != doc["verification_code"]
    stale = first.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    refused(hub.admin("POST", f"/cas/{doc['id']}/verify", stale), 400, "verification_code_mismatch")
    proof = first.company.verification_certificate(renewed).public_bytes(PEM)
    reply = hub.admin("POST", f"/cas/{doc['id']}/verify", proof, headers=PEM_TYPE)
    assert reply.status == 200 and reply.json()["status"] == "verified"
    detail = hub.admin("GET", f"/cas/{doc['id']}").json()
    assert detail["status"] == "verified" and "verification_code" not in detail

    # DER upload, proof by signature over the code.
    reply = hub.admin(
        "POST", "/cas", second.company.certificate.public_bytes(DER), headers={"Content-Type": "application/pkix-cert"}
    )
    assert reply.status == 201, reply
    code, ca_id = reply.json()["verification_code"], reply.json()["id"]
    reply = hub.admin("POST", f"/cas/{ca_id}/verify", json_body={"signature": b64(second.company.sign_code(code))})
    assert reply.status == 200, reply
    authenticate(hub, second.device("der-ca-device"))

    reply = hub.admin("DELETE", f"/cas/{ca_id}")
    assert reply.status == 200 and reply.json() == {"id": ca_id, "status": "removed"}
    refused(hub.admin("GET", f"/cas/{ca_id}"), 404, "ca_not_found")
    refused(hub.admin("DELETE", f"/cas/{ca_id}"), 404, "ca_not_found")


def test_ca_removal_is_enforced_by_every_worker_at_once(hub, workers):
    chain = SupplyChain.build(depth=1)
    ca_id = register(hub, chain)["id"]
    device = chain.device("orphan")
    for conn in workers:
        authenticate(hub, device, conn)
    pending = [challenge(hub, device, conn) for conn in workers]
    assert hub.admin("DELETE", f"/cas/{ca_id}", conn=workers[0]).status == 200
    for conn, issued in zip(workers, pending):
        refused(hub.call("POST", "/devices/challenge", device.chain_pem(), conn=conn), 401, "chain_untrusted")
        refused(prove(hub, proof_body(device, issued), conn), 401, "chain_untrusted")


# -- devices ---------------------------------------------------------------------------------------------
def test_device_authentication_and_registry(hub, fleet, workers):
    device = fleet.device("dev-1")
    issued = challenge(hub, device, workers[0])
    assert issued["device_id"] == "dev-1"
    assert issued["expires_at"] > time.time() + 20
    reply = prove(hub, proof_body(device, issued), workers[1])  # proven on the other worker
    assert reply.status == 200, reply
    ca_id = fingerprint(fleet.company.certificate)
    assert reply.json() == {"device_id": "dev-1", "ca": ca_id, "first_connection": True}
    again = authenticate(hub, device, workers[0])
    assert again["first_connection"] is False
    assert authenticate(hub, device, workers[1])["first_connection"] is False

    def registry_caught_up():
        doc = hub.admin("GET", "/devices/dev-1").json()
        assert doc["authentications"] == 3, doc
        return doc

    doc = eventually(registry_caught_up)
    assert doc["ca"] == ca_id and doc["disabled"] is False
    assert doc["first_seen"] <= doc["last_authenticated"] <= time.time()
    refused(hub.admin("GET", "/devices/never-seen"), 404, "device_not_found")


def test_first_connection_is_reported_once_when_two_workers_race(hub, fleet, workers):
    for n in range(8):
        device = fleet.device(f"race-{n}")
        bodies = [proof_body(device, challenge(hub, device, conn)) for conn in workers]
        results = [None] * len(workers)

        def run(i, results=results, bodies=bodies):
            results[i] = prove(hub, bodies[i], workers[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status == 200 for r in results), results
        assert sorted(r.json()["first_connection"] for r in results) == [False, True]


def test_a_proof_is_accepted_once_whichever_worker_sees_it(hub, fleet, workers):
    for first in range(len(workers)):
        device = fleet.device(f"replay-{first}")
        body = proof_body(device, challenge(hub, device, workers[first]))
        assert prove(hub, body, workers[first]).status == 200
        for conn in workers:
            refused(prove(hub, body, conn), 401, "challenge_used")
    # And over fresh connections, wherever the kernel puts them.
    device = fleet.device("replay-fresh")
    body = proof_body(device, challenge(hub, device))
    outcomes = [prove(hub, body).status for _ in range(12)]
    assert outcomes.count(200) == 1 and outcomes.count(401) == 11


def test_disable_and_enable_a_device(hub, fleet, workers):
    device = fleet.device("dev-disabled")
    authenticate(hub, device)
    pending = [challenge(hub, device, conn) for conn in workers]
    reply = hub.admin("POST", "/devices/dev-disabled/disable", conn=workers[0])
    assert reply.status == 200 and reply.json() == {"device_id": "dev-disabled", "disabled": True}
    for conn, issued in zip(workers, pending):
        refused(hub.call("POST", "/devices/challenge", device.chain_pem(), conn=conn), 403, "device_disabled")
        refused(prove(hub, proof_body(device, issued), conn), 403, "device_disabled")
    assert hub.admin("GET", "/devices/dev-disabled").json()["disabled"] is True
    # Disabling ahead of a device's first connection works too.
    assert hub.admin("POST", "/devices/not-yet-here/disable").status == 200
    refused(hub.call("POST", "/devices/challenge", fleet.device("not-yet-here").chain_pem()), 403, "device_disabled")
    assert hub.admin("POST", "/devices/dev-disabled/enable", conn=workers[1]).status == 200
    for conn in workers:
        assert authenticate(hub, device, conn)["first_connection"] is False
    assert hub.admin("POST", "/devices/not-yet-here/enable").status == 200
    assert authenticate(hub, fleet.device("not-yet-here"))["first_connection"] is True


def test_revocation_is_enforced_by_every_worker_from_the_next_request(hub, workers):
    chain = SupplyChain.build(depth=2)
    register(hub, chain)
    device, sibling = chain.device("rev-leaf"), chain.device("rev-sibling")
    for conn in workers:
        authenticate(hub, device, conn)  # warm every worker's issuer cache
        authenticate(hub, sibling, conn)
    pending = [challenge(hub, device, conn) for conn in workers]
    # The format `openssl x509 -fingerprint -sha256` prints is accepted.
    colon = "sha256 Fingerprint=" + ":".join(f"{b:02X}" for b in bytes.fromhex(fingerprint(device.certificate)))
    reply = hub.admin("POST", "/revocations", json_body={"fingerprint": colon}, conn=workers[0])
    assert reply.status == 201 and reply.json()["fingerprint"] == fingerprint(device.certificate), reply
    # The first requests each worker sees after the acknowledgement are refused: an order of events.
    for conn, issued in zip(workers, pending):
        refused(hub.call("POST", "/devices/challenge", device.chain_pem(), conn=conn), 403, "cert_revoked")
        refused(prove(hub, proof_body(device, issued), conn), 403, "cert_revoked")
        authenticate(hub, sibling, conn)
    # Revoking the issuing intermediate refuses every device below it, on every worker.
    assert (
        hub.admin(
            "POST", "/revocations", json_body={"fingerprint": fingerprint(chain.issuer.certificate)}, conn=workers[1]
        ).status
        == 201
    )
    for conn in workers:
        refused(hub.call("POST", "/devices/challenge", sibling.chain_pem(), conn=conn), 403, "cert_revoked")
    listed = {r["fingerprint"] for r in hub.admin("GET", "/revocations").json()["revocations"]}
    assert {fingerprint(device.certificate), fingerprint(chain.issuer.certificate)} <= listed
    refused(hub.admin("POST", "/revocations", json_body={"fingerprint": "abc"}), 404, "revocation_not_found")
    refused(hub.admin("POST", "/revocations", json_body={}), 400, "malformed_input")


# -- the wire --------------------------------------------------------------------------------------------
def _raw(hub, payload: bytes, *, chunk: int | None = None, expect: int = 1, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh TCP connection (optionally a few at a time) and read ``expect`` replies."""
    with socket.create_connection((hub.host, hub.port), timeout=timeout) as sock:
        if chunk:
            for i in range(0, len(payload), chunk):
                sock.sendall(payload[i : i + chunk])
        else:
            sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.") < expect or not _complete(data, expect):
            more = sock.recv(65536)
            if not more:
                break
            data += more
        return data


def _complete(data: bytes, expect: int) -> bool:
    pos = 0
    for _ in range(expect):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return False
        match = re.search(rb"(?i)content-length: *(\d+)", data[pos:end])
        if not match:
            return False
        pos = end + 4 + int(match.group(1))
        if len(data) < pos:
            return False
    return True


def _request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: hub\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def test_pipelined_split_and_mixed_requests_on_one_connection(hub, fleet):
    device = fleet.device("wire-1")
    chain = device.chain_pem()
    two = _raw(hub, _request("/devices/challenge", chain) * 2, expect=2)
    assert two.count(b"HTTP/1.1 200 OK") == 2
    dribbled = _raw(hub, _request("/devices/challenge", chain), chunk=7)
    assert dribbled.startswith(b"HTTP/1.1 200 OK")
    # A device request, then an administrative one: the connection moves to the general server.
    mixed = _raw(hub, _request("/devices/challenge", chain) + b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n", expect=2)
    assert mixed.count(b"HTTP/1.1 200 OK") == 2 and b'"status": "ok"' in mixed
    casual = _raw(
        hub,
        b"POST /devices/challenge HTTP/1.1\r\ncontent-LENGTH:   "
        + str(len(chain)).encode()
        + b"  \r\ncontent-type:application/x-pem-file\r\n\r\n"
        + chain,
    )
    assert casual.startswith(b"HTTP/1.1 200 OK")
    closed = _raw(hub, _request("/devices/challenge", chain, b"Connection: close\r\n"))
    assert b"Connection: close" in closed
    old = _raw(
        hub, b"POST /devices/challenge HTTP/1.0\r\nContent-Length: " + str(len(chain)).encode() + b"\r\n\r\n" + chain
    )
    assert old.startswith(b"HTTP/1.") and b" 200 OK" in old.split(b"\r\n", 1)[0]
    chunked = _raw(
        hub,
        b"POST /devices/challenge HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n"
        + hex(len(chain))[2:].encode()
        + b"\r\n"
        + chain
        + b"\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 200 OK")
    big = _raw(
        hub,
        b"POST /devices/challenge HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"8000\r\n" + b"A" * 0x8000 + b"\r\n") * 2
        + b"0\r\n\r\n",
    )
    assert big.startswith(b"HTTP/1.1 413") and b"upload_too_large" in big


def test_bad_input_never_yields_500_or_kills_a_worker(hub, issuers):
    fleet = issuers()
    before, cas = sorted(hub.healthz()["workers"]), stored_cas(hub)
    device = fleet.device("fuzz")
    chain = device.chain_pem()
    issued = challenge(hub, device)
    bodies = [
        b"",
        b"\x00" * 100,
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        chain[: len(chain) // 2],
        chain.replace(b"M", b"N", 3),
        b"\x30\x82\xff\xff" + b"\x00" * 64,
        json.dumps({"challenge": issued["challenge"], "signature": "A" * 5000}).encode(),
        json.dumps({"challenge": issued["challenge"][:-8], "signature": "AAAA"}).encode(),
        b'{"challenge": null, "signature": null}',
        b"[]",
        b"1e999",
        b"[" * 15000,
        b"1" * 9000,
        b'"\\ud800"',
        "é".encode("utf-16"),
    ]
    paths = [
        "/devices/challenge",
        "/devices/proof",
        "/cas",
        "/cas/" + "a" * 64 + "/verify",
        "/revocations",
        "/devices/x/disable",
    ]
    token = hub.admin_token()  # management paths must get past the credential to the bodies
    for path in paths:
        for body in bodies:
            for ctype in ("application/json", "application/x-pem-file", None):
                reply = hub.call("POST", path, body, headers={"Content-Type": ctype} if ctype else {}, token=token)
                assert reply.status < 500, (path, body[:40], reply)
                assert reply.status < 400 or "error" in reply.json(), reply
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"POST /devices/proof HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /devices/proof HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /devices/challenge HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
        b"POST /devices/challenge HTTP/1.1\n\n",
        b"POST /devices/proof HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}",
        b"POST /devices/proof HTTP/1.1\r\nX: a\r\n folded\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /devices/proof HTTP/1.1\r\nContent-Length: -2\r\n\r\n{}",
    ):
        reply = _raw(hub, raw)  # not HTTP at all: the HTTP parser's own plain-text 400 (or 431, 413)
        assert reply == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", reply), reply[:200]
    assert sorted(hub.healthz()["workers"]) == before
    assert stored_cas(hub) == cas
    assert authenticate(hub, fleet.device("after-fuzz"))["device_id"] == "after-fuzz"


# -- metrics ---------------------------------------------------------------------------------------------
def test_metrics_count_authentications_across_workers(hub, fleet, workers):
    def admitted():
        return metric(metric_values(hub), "certstorm_authentications_total", outcome="admitted", step="proof", code="")

    time.sleep(0.5)  # let every worker flush what earlier tests did
    before = metric_values(hub)
    for n in range(6):
        authenticate(hub, fleet.device(f"metered-{n}"), workers[n % len(workers)])
    refused(hub.call("POST", "/devices/challenge", b"junk", conn=workers[0]), 400, "malformed_input")

    def counted():
        after = metric_values(hub)
        assert (
            metric(after, "certstorm_authentications_total", outcome="admitted", step="proof", code="")
            - metric(before, "certstorm_authentications_total", outcome="admitted", step="proof", code="")
            == 6
        )
        assert (
            metric(
                after, "certstorm_authentications_total", outcome="refused", step="challenge", code="malformed_input"
            )
            - metric(
                before, "certstorm_authentications_total", outcome="refused", step="challenge", code="malformed_input"
            )
            == 1
        )
        for name in ("certstorm_chain_validation_seconds_count", "certstorm_pop_verification_seconds_count"):
            assert metric(after, name) - metric(before, name) >= 6
        assert (
            metric(after, "certstorm_request_seconds_count", endpoint="proof")
            - metric(before, "certstorm_request_seconds_count", endpoint="proof")
            == 6
        )
        return after

    after = eventually(counted)
    assert metric(after, "certstorm_chain_cache_total", result="hit") > 0
    assert ("certstorm_pending_challenges", ()) in after
    assert ("certstorm_registry_write_lag_seconds", ()) in after
    assert admitted() >= 6


def test_a_body_cut_short_is_the_clients_fault():
    import asyncio
    from unittest import mock

    from aiohttp import streams
    from aiohttp.test_utils import make_mocked_request
    from aiohttp.web_protocol import RequestPayloadError

    from hubsim import AuthError
    from hubsim.service.codec import PEM_TYPES
    from hubsim.service.httpapi import HttpApi

    async def read(exc):
        payload = streams.StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
        payload.feed_data(b"-----BEGIN")
        payload.set_exception(exc)
        request = make_mocked_request("POST", "/devices/challenge", payload=payload, headers={"Content-Length": "1000"})
        with pytest.raises(AuthError) as info:
            await HttpApi._body(None, request, 4096, PEM_TYPES)
        return info.value.code

    for exc in (ConnectionResetError("Connection lost"), RequestPayloadError("bad chunk")):
        assert asyncio.run(read(exc)) == "malformed_input"


# -- the shared pieces, in-process --------------------------------------------------------------------
def test_replay_guard_claims_once_reuses_expired_slots_and_fails_closed(tmp_path):
    import os

    from hubsim import AuthError
    from hubsim.service.guard import SharedReplayGuard, ensure_guard_file

    path = str(tmp_path / "g")
    assert ensure_guard_file(path, slots=32) is True
    assert ensure_guard_file(path, slots=32) is False  # kept, with its secret
    first, second = SharedReplayGuard(path), SharedReplayGuard(path)  # two "workers"
    assert first.secret == second.secret and len(first.secret) == 32 and first.slots == 32

    def nonce(bucket: int) -> bytes:  # both hash choices (low bit of bytes 0 and 4) in one bucket
        raw = bytearray(os.urandom(16))
        raw[0] = (raw[0] & 0xFE) | bucket
        raw[4] = (raw[4] & 0xFE) | bucket
        return bytes(raw)

    nonces = [nonce(i % 2) for i in range(32)]
    for n in nonces:
        assert first.claim(n, 100.0, 10.0)
    assert not any(second.claim(n, 100.0, 50.0) for n in nonces)  # replays, seen by the other process
    with pytest.raises(AuthError) as info:
        second.claim(os.urandom(16), 100.0, 50.0)  # every slot live: refuse rather than forget
    assert info.value.code == "throttled"
    assert second.claim(nonces[0], 200.0, 150.0)  # after expiry the nonce (and its slot) is free again
    assert first.live_entries(150.0) == 1
    # A nonce whose bytes straddle two live stored nonces in its bucket is not mistaken for a replay.
    n0 = bytearray(nonce(0))
    n0[8] &= 0xFE
    n0[12] &= 0xFE
    n0, n1 = bytes(n0), nonce(0)
    assert first.claim(n0, 400.0, 300.0) and first.claim(n1, 400.0, 300.0)
    assert first.claim(n0[8:] + n1[:8], 400.0, 300.0)
    assert not first.claim(n1, 400.0, 300.0)
    assert first.generation() == 0 and second.bump_generation() == 1 and first.generation() == 1
    first.close()
    second.close()
    with open(path, "r+b") as fh:
        fh.write(b"garbage!")
    assert ensure_guard_file(path, slots=32) is True  # unreadable: a new file, a new secret


def test_shared_token_bucket_refills_at_the_rate(tmp_path):
    from hubsim.service.quota import SharedTokenBucket, create_bucket_file, retry_after_header

    now = [1000.0]
    path = str(tmp_path / "q")
    create_bucket_file(path, parse_quota("2"))
    a, b = SharedTokenBucket(path, clock=lambda: now[0]), SharedTokenBucket(path, clock=lambda: now[0])
    # The file was written with the real monotonic clock; start both from a known, full state.
    assert a.take() == 0.0 and b.take() == 0.0
    wait = a.take()
    assert wait > 0 and b.take() > 0  # the burst (2 tokens) is shared
    now[0] += 0.5
    assert b.take() == 0.0 and a.take() == pytest.approx(0.5)
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"
    a.close()
    b.close()


# -- configuration ---------------------------------------------------------------------------------------
def test_quota_presets_and_rates():
    assert parse_quota(None) is None and parse_quota("0") is None and parse_quota("none") is None
    assert parse_quota("S1").rate == 100 and parse_quota("S1:4").rate == 100 and parse_quota("s1:10").rate == 120
    assert parse_quota("S2:4").rate == 480 and parse_quota("S3:2").rate == 12000
    assert parse_quota("12.5").rate == 12.5 and parse_quota("12.5").burst == 12.5
    assert parse_quota("0.5").burst == 1.0
    for bad in ("S4", "S1:0", "S1:201", "S3:11", "-3", "fast", "nan"):
        with pytest.raises(ValueError):
            parse_quota(bad)


def test_quota_refuses_new_connections_with_retry_after_and_challenges_expire(tmp_path):
    chain = SupplyChain.build(depth=1)
    with HubProcess(tmp_path / "hub.db", workers=2, args=("--quota", "4", "--challenge-ttl", "1")) as hub:
        register(hub, chain)
        device = chain.device("throttled")
        replies = [hub.call("POST", "/devices/challenge", device.chain_pem()) for _ in range(12)]
        statuses = [r.status for r in replies]
        assert 3 <= statuses.count(200) <= 6, statuses  # the burst is one second's worth, shared by workers
        limited = [r for r in replies if r.status == 429]
        assert limited
        for reply in limited:
            refused(reply, 429, "throttled")
            assert int(reply.headers["Retry-After"]) >= 1
            assert TIMING.match(reply.headers["Server-Timing"])
        ok = next(r for r in replies if r.status == 200).json()
        assert prove(hub, proof_body(device, ok)).status == 200  # proofs are not charged
        assert hub.healthz()["quota"] == "4/s"

        def throttles_counted():
            assert metric(metric_values(hub), "certstorm_throttled_total") == len(limited)

        eventually(throttles_counted)
        late = proof_body(device, next(r for r in replies[::-1] if r.status == 200).json())
        time.sleep(1.2)
        refused(prove(hub, late), 401, "challenge_expired")


def test_a_second_hub_cannot_take_a_port_or_a_database_in_use(hub, tmp_path):
    import subprocess
    import sys

    for args, complaint in (
        (["--port", str(hub.port), "--db", str(tmp_path / "other.db")], "Address already in use"),
        (["--port", "0", "--db", hub.db], "another hub is already using"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "hubsim.service", "--workers", "1", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done
        assert complaint in done.stderr
    assert hub.healthz()["status"] == "ok"


# -- restarts and crashes --------------------------------------------------------------------------------
def test_state_survives_a_restart(tmp_path):
    db = tmp_path / "hub.db"
    chain = SupplyChain.build(depth=2)
    known, revoked, disabled, waiting = (chain.device(n) for n in ("known", "revoked", "disabled", "waiting"))
    with HubProcess(db) as hub:
        ca_id = register(hub, chain)["id"]
        unverified_id = register(hub, SupplyChain.build(depth=0), verify=False)["id"]
        answered = proof_body(known, challenge(hub, known))
        assert prove(hub, answered).json()["first_connection"] is True
        authenticate(hub, known)
        assert (
            hub.admin("POST", "/revocations", json_body={"fingerprint": fingerprint(revoked.certificate)}).status == 201
        )
        assert hub.admin("POST", "/devices/disabled/disable").status == 200
        outstanding = proof_body(waiting, challenge(hub, waiting))
        hub.stop()
        assert hub.proc.returncode == 0, hub.log()
    with HubProcess(db) as hub:
        cas = {ca["id"]: ca["status"] for ca in hub.admin("GET", "/cas").json()["cas"]}
        assert cas == {ca_id: "verified", unverified_id: "unverified"}
        assert hub.admin("GET", f"/cas/{unverified_id}").json()["verification_code"]
        doc = hub.admin("GET", "/devices/known").json()
        assert doc["authentications"] == 2 and doc["ca"] == ca_id
        assert authenticate(hub, known)["first_connection"] is False
        refused(prove(hub, answered), 401, "challenge_used")  # the replay guard persisted
        reply = prove(hub, outstanding)  # so did the challenge secret
        assert reply.status == 200 and reply.json()["first_connection"] is True
        refused(hub.call("POST", "/devices/challenge", revoked.chain_pem()), 403, "cert_revoked")
        refused(hub.call("POST", "/devices/challenge", disabled.chain_pem()), 403, "device_disabled")


def test_a_killed_worker_is_replaced(tmp_path):
    chain = SupplyChain.build(depth=1)
    with HubProcess(tmp_path / "hub.db") as hub:
        register(hub, chain)
        victim = hub.healthz()["workers"][0]
        import os
        import signal

        os.kill(victim, signal.SIGKILL)
        pids = hub.wait_workers(2, timeout=15, exclude={victim})
        assert victim not in pids
        for n in range(4):
            authenticate(hub, chain.device(f"after-crash-{n}"))
        values = metric_values(hub)
        assert metric(values, "certstorm_worker_restarts_total") == 1
        assert "was killed by SIGKILL" in hub.log()


# -- generic clients stay on the device fast path ----------------------------------------------------------
def _handoffs(hub) -> float:
    """Device requests handed to aiohttp (reading /metrics is itself a request_line handoff: not counted)."""
    values = metric_values(hub)
    return sum(
        v
        for (name, labels), v in values.items()
        if name == "certstorm_fastpath_handoffs_total" and dict(labels)["reason"] != "request_line"
    )


def _settled_handoffs(hub) -> float:
    """Every worker flushes its counters within a sync interval; read until two reads agree."""
    previous = _handoffs(hub)
    while True:
        time.sleep(0.5)
        current = _handoffs(hub)
        if current == previous:
            return current
        previous = current


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command-line tool")
@pytest.mark.parametrize("expect", [False, True], ids=["curl-defaults", "expect-100-continue"])
def test_curl_stays_on_the_fast_path(hub, fleet, tmp_path, expect):
    """curl as a person would use it, and a client that sends `Expect: 100-continue` (as older curl did
    for bodies over 1 KiB): the fast path answers `100 Continue` itself instead of handing the connection
    to aiohttp, which costs several times as much per request."""
    device = fleet.device(f"curl-device-{expect}")
    (tmp_path / "chain.pem").write_bytes(device.chain_pem())
    before = _settled_handoffs(hub)
    url = f"http://{hub.host}:{hub.port}"
    extra = ["-H", "Expect: 100-continue"] if expect else []
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-v",
            *extra,
            "-H",
            "Content-Type: application/x-pem-file",
            "--data-binary",
            "@chain.pem",
            f"{url}/devices/challenge",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    if expect:
        assert b"HTTP/1.1 100 Continue" in out.stderr, out.stderr.decode(errors="replace")
    issued = json.loads(out.stdout)
    (tmp_path / "proof.json").write_text(json.dumps(proof_body(device, issued)))
    out = subprocess.run(
        [
            "curl",
            "-sS",
            *extra,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@proof.json",
            f"{url}/devices/proof",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=True,
    )
    assert json.loads(out.stdout)["device_id"] == f"curl-device-{expect}"
    assert _settled_handoffs(hub) == before


def test_aiohttp_client_defaults_stay_on_the_fast_path(hub, fleet):
    import asyncio

    import aiohttp

    device = fleet.device("aiohttp-device")

    async def run():
        async with aiohttp.ClientSession(f"http://{hub.host}:{hub.port}") as session:
            async with session.post("/devices/challenge", data=device.chain_pem(), headers=PEM_TYPE) as reply:
                issued = await reply.json()
            async with session.post("/devices/proof", json=proof_body(device, issued)) as reply:
                return await reply.json()

    before = _settled_handoffs(hub)
    assert asyncio.run(run())["device_id"] == "aiohttp-device"
    assert _settled_handoffs(hub) == before


def test_a_chunked_upload_is_handed_to_aiohttp_and_counted(hub, fleet):
    device = fleet.device("chunked-device")
    before = _settled_handoffs(hub)
    reply = hub.call("POST", "/devices/challenge", iter([device.chain_pem()]), headers=PEM_TYPE)
    assert reply.status == 200, reply
    assert _settled_handoffs(hub) == before + 1


def test_a_worker_keeps_house_through_a_failure_sweeps_idle_connections_and_stops_when_told(monkeypatch, caplog):
    import asyncio
    import logging

    from hubsim.service import worker

    monkeypatch.setattr(worker, "SYNC_INTERVAL", 0.001)
    monkeypatch.setattr(worker, "IDLE_SWEEP", 0.01)
    calls, sweeps = [], []

    async def run():
        stop = asyncio.Event()

        def housekeeping():
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("the change log is locked")
            if len(calls) == 40:
                stop.set()

        await worker.keep_house(housekeeping, stop, logging.getLogger("test"), sweep=lambda: sweeps.append(1))

    asyncio.run(run())
    assert len(calls) == 40  # the failure did not end it, and nothing ran after the stop
    assert 1 <= len(sweeps) < len(calls)  # the sweep runs on its own, longer interval
    assert "housekeeping failed; retrying at the next interval" in caplog.text
