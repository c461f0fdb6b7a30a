"""Security properties of the hub, each proved end to end over HTTP against the real hub (two workers).

Several of these are also checked in-process in tests/test_engine.py; here they must hold for the service:
across worker processes, through the device fast path, and for requests racing each other. "Every
worker" is checked by sending a device request as the first request of a fresh connection (so the fast
path answers it) and asking /healthz on the same connection afterwards which worker that was.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter

import pytest
from conftest import serve_hub
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hubtools import request_then_worker

from certstorm.processes import HubProcess
from devicekit.httpdevice import authenticate, register_and_prove
from devicekit.pki import Device, SupplyChain

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PEM_TYPE = {"Content-Type": "application/x-pem-file"}
JSON_TYPE = {"Content-Type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fingerprint(cert) -> str:
    return hashlib.sha256(cert.public_bytes(DER)).hexdigest()


class Answer:
    def __init__(self, status: int, body: bytes, pid: int):
        self.status, self.body, self.pid = status, body, pid

    @property
    def code(self) -> str | None:
        try:
            return json.loads(self.body).get("error")
        except ValueError:
            return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:160]!r}, worker {self.pid})"


def fresh(hub: HubProcess, path: str, body: bytes, headers: dict) -> Answer:
    """One device request as the first request of a new connection, and the worker that answered it."""
    return Answer(*request_then_worker(hub.host, hub.port, path, body, headers))


def on_every_worker(hub: HubProcess, path: str, body: bytes, headers: dict, attempts: int = 60) -> list[Answer]:
    """The same request on fresh connections until every worker has answered it at least once."""
    workers = set(hub.healthz()["workers"])
    answers, seen = [], set()
    for _ in range(attempts):
        answer = fresh(hub, path, body, headers)
        answers.append(answer)
        seen.add(answer.pid)
        if seen >= workers:
            return answers
    raise AssertionError(f"only workers {seen} of {workers} answered in {attempts} connections")


def get_challenge(hub, device) -> str:
    answer = fresh(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE)
    assert answer.status == 200, answer
    return answer.json()["challenge"]


def proof_of(device, challenge: str, signer=None) -> bytes:
    token = base64.b64decode(challenge)
    signature = (signer or device).sign(token)
    return json.dumps({"challenge": challenge, "signature": b64(signature)}).encode()


def refused_everywhere(hub, path, body, headers, status: int, code: str) -> list[Answer]:
    answers = on_every_worker(hub, path, body, headers)
    for answer in answers:
        assert (answer.status, answer.code) == (status, code), answer
    return answers


def admin(hub, method, path, body=None, *, json_body=None, headers=None):
    return hub.admin(method, path, body, json_body=json_body, headers=headers)


def registered(hub, depth: int = 2) -> SupplyChain:
    chain = SupplyChain.build(depth=depth)
    register_and_prove(hub, chain.company)
    return chain


def settled_entry(hub: HubProcess, device_id: str) -> dict:
    """The device's registry entry once no worker holds counts still to write behind (they flush every
    0.2 s): from then on it is exact."""
    conns = hub.worker_connections()
    try:
        deadline = time.monotonic() + 10
        while any(hub.healthz(c)["registry_pending"] for c in conns.values()):
            assert time.monotonic() < deadline, "the workers never flushed their registry writes"
            time.sleep(0.05)
    finally:
        for conn in conns.values():
            conn.close()
    reply = admin(hub, "GET", f"/devices/{device_id}")
    assert reply.status == 200, reply
    return reply.json()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "security")


# -- proof of possession ------------------------------------------------------------------------------------
def test_a_replayed_proof_is_refused_by_every_worker_even_racing_and_after_a_worker_restart(hub, issuers):
    chain = issuers()
    name = f"replayed-{os.urandom(4).hex()}"
    device = chain.device(name)
    body = proof_of(device, get_challenge(hub, device))
    first = fresh(hub, "/devices/proof", body, JSON_TYPE)
    assert first.status == 200 and first.json()["device_id"] == name, first
    refused_everywhere(hub, "/devices/proof", body, JSON_TYPE, 401, "challenge_used")
    assert settled_entry(hub, name)["authentications"] == 1  # the refused replays were not counted

    # Eight copies of one fresh proof sent at once, over fresh connections: exactly one is admitted.
    body = proof_of(device, get_challenge(hub, device))
    answers: list[Answer] = []
    barrier = threading.Barrier(8)

    def race():
        conn = hub.connect()
        try:
            barrier.wait()
            conn.request("POST", "/devices/proof", body=body, headers=JSON_TYPE)
            reply = conn.getresponse()
            answers.append(Answer(reply.status, reply.read(), 0))
        finally:
            conn.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers) == [200] + [401] * 7, answers
    assert {a.code for a in answers if a.status == 401} == {"challenge_used"}
    assert settled_entry(hub, name)["authentications"] == 2  # one of the eight, on record once

    # The worker that admitted a proof dies; its replacement still refuses the replay (the record of
    # used nonces lives in the shared guard file, not in the worker).
    body = proof_of(device, get_challenge(hub, device))
    admitted = fresh(hub, "/devices/proof", body, JSON_TYPE)
    assert admitted.status == 200, admitted
    os.kill(admitted.pid, signal.SIGKILL)
    hub.wait_workers(2, timeout=15, exclude={admitted.pid})
    refused_everywhere(hub, "/devices/proof", body, JSON_TYPE, 401, "challenge_used")
    # The killed worker may have lost its unwritten count of the third admission, never more; no replay counted.
    assert settled_entry(hub, name)["authentications"] in (2, 3)


def test_a_challenge_issued_for_one_certificate_cannot_be_answered_by_another(hub, issuers):
    chain = issuers()
    owner, thief = chain.device("owner"), chain.device("thief")
    challenge = get_challenge(hub, owner)
    # The thief signs the owner's challenge with its own key: the token carries the owner's key.
    refused_everywhere(hub, "/devices/proof", proof_of(owner, challenge, signer=thief), JSON_TYPE, 401, "pop_invalid")
    # The thief rewrites the token to carry its own public key: the seal breaks.
    token = bytearray(base64.b64decode(challenge))
    owner_spki = owner.certificate.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    thief_spki = thief.certificate.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    at = bytes(token).index(owner_spki)
    token[at : at + len(owner_spki)] = thief_spki
    forged = b64(bytes(token))
    refused_everywhere(hub, "/devices/proof", proof_of(thief, forged), JSON_TYPE, 401, "challenge_invalid")
    # Neither attempt used the challenge up: the owner's own proof is still accepted, once.
    assert fresh(hub, "/devices/proof", proof_of(owner, challenge), JSON_TYPE).status == 200


def test_an_expired_challenge_is_refused_by_every_worker(tmp_path):
    chain = SupplyChain.build(depth=1)
    with HubProcess(tmp_path / "hub.db", workers=2, args=("--challenge-ttl", "1")) as hub:
        register_and_prove(hub, chain.company)
        device = chain.device("late")
        late = proof_of(device, get_challenge(hub, device))
        on_time = proof_of(device, get_challenge(hub, device))
        assert fresh(hub, "/devices/proof", on_time, JSON_TYPE).status == 200  # the same device, in time
        time.sleep(1.3)
        refused_everywhere(hub, "/devices/proof", late, JSON_TYPE, 401, "challenge_expired")


# -- trust anchors ------------------------------------------------------------------------------------------
def test_a_device_under_an_unverified_ca_is_refused_until_the_ca_is_proven(hub):
    chain = SupplyChain.build(depth=2)
    reply = admin(hub, "POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert reply.status == 201 and reply.json()["status"] == "unverified", reply
    doc = reply.json()
    device = chain.device("early")
    refused_everywhere(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE, 401, "chain_untrusted")
    proof = chain.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    assert admin(hub, "POST", f"/cas/{doc['id']}/verify", proof, headers=PEM_TYPE).status == 200
    for answer in on_every_worker(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE):
        assert answer.status == 200, answer


def test_registering_a_ca_without_its_key_never_makes_it_a_trust_anchor(hub):
    # Company-X's CA certificate is public; an impostor uploads it and tries to prove possession.
    owner, impostor = SupplyChain.build(depth=1), SupplyChain.build(depth=1)
    reply = admin(hub, "POST", "/cas", owner.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert reply.status == 201, reply
    ca_id, code = reply.json()["id"], reply.json()["verification_code"]
    path = f"/cas/{ca_id}/verify"
    # A certificate with the right CN and issuer name, signed by the impostor's own key (same subject).
    forged = impostor.company.verification_certificate(code).public_bytes(PEM)
    reply = admin(hub, "POST", path, forged, headers=PEM_TYPE)
    assert (reply.status, reply.json()["error"]) == (401, "verification_signature_invalid"), reply
    # A raw signature over the code with the impostor's key.
    reply = admin(hub, "POST", path, json_body={"signature": b64(impostor.company.sign_code(code))})
    assert (reply.status, reply.json()["error"]) == (401, "verification_signature_invalid"), reply
    # The uploaded CA certificate itself, replayed as its own proof.
    reply = admin(hub, "POST", path, owner.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert reply.status in (400, 401) and reply.json()["error"] in (
        "verification_code_mismatch",
        "verification_signature_invalid",
    ), reply
    assert admin(hub, "GET", f"/cas/{ca_id}").json()["status"] == "unverified"
    device = owner.device("owned")
    refused_everywhere(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE, 401, "chain_untrusted")
    # The failed attempts did not burn the code: the real holder proves possession with it.
    genuine = owner.company.verification_certificate(code).public_bytes(PEM)
    assert admin(hub, "POST", path, genuine, headers=PEM_TYPE).status == 200
    # Once verified, nobody can register it again to restart the process.
    reply = admin(hub, "POST", "/cas", owner.company.certificate.public_bytes(PEM), headers=PEM_TYPE)
    assert (reply.status, reply.json()["error"]) == (409, "ca_exists"), reply


def test_a_verification_code_works_once_and_only_for_its_ca(hub):
    chain, other = SupplyChain.build(depth=1), SupplyChain.build(depth=1)
    doc = admin(hub, "POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE).json()
    other_doc = admin(hub, "POST", "/cas", other.company.certificate.public_bytes(PEM), headers=PEM_TYPE).json()
    path = f"/cas/{doc['id']}/verify"
    # The other CA proves possession of its own key over *this* CA's code: wrong CA.
    crossed = other.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    reply = admin(hub, "POST", f"/cas/{other_doc['id']}/verify", crossed, headers=PEM_TYPE)
    assert (reply.status, reply.json()["error"]) == (400, "verification_code_mismatch"), reply
    # A replaced code stops working.
    stale = chain.company.verification_certificate(doc["verification_code"]).public_bytes(PEM)
    renewed = admin(hub, "POST", f"/cas/{doc['id']}/verification-code").json()["verification_code"]
    reply = admin(hub, "POST", path, stale, headers=PEM_TYPE)
    assert (reply.status, reply.json()["error"]) == (400, "verification_code_mismatch"), reply
    proof = chain.company.verification_certificate(renewed).public_bytes(PEM)
    assert admin(hub, "POST", path, proof, headers=PEM_TYPE).status == 200
    # Used once: the same proof again, on both workers, is refused.
    for conn in hub.worker_connections().values():
        reply = hub.admin("POST", path, proof, headers=PEM_TYPE, conn=conn)
        conn.close()
        assert (reply.status, reply.json()["error"]) == (409, "ca_already_verified"), reply
    # Removed and registered again: a new code; the used one (and its certificate) is worthless.
    assert admin(hub, "DELETE", f"/cas/{doc['id']}").status == 200
    again = admin(hub, "POST", "/cas", chain.company.certificate.public_bytes(PEM), headers=PEM_TYPE).json()
    assert again["status"] == "unverified" and again["verification_code"] not in (doc["verification_code"], renewed)
    reply = admin(hub, "POST", path, proof, headers=PEM_TYPE)
    assert (reply.status, reply.json()["error"]) == (400, "verification_code_mismatch"), reply
    refused_everywhere(hub, "/devices/challenge", chain.device("after").chain_pem(), PEM_TYPE, 401, "chain_untrusted")


# -- revocation, disabling, removal ---------------------------------------------------------------------------
def test_a_revoked_intermediate_refuses_every_device_below_it_on_every_worker(hub, issuers):
    chain = issuers(depth=2)
    factory = chain.custodians[0]
    below, unrelated = chain.device("below-factory"), registered(hub, depth=2).device("elsewhere")
    for answer in on_every_worker(hub, "/devices/challenge", below.chain_pem(), PEM_TYPE):
        assert answer.status == 200, answer  # every worker has the path in its issuer cache now
    pending = [proof_of(below, get_challenge(hub, below)) for _ in range(6)]
    reply = admin(hub, "POST", "/revocations", json_body={"fingerprint": fingerprint(factory.certificate)})
    assert reply.status == 201, reply
    stored = [r["fingerprint"] for r in admin(hub, "GET", "/revocations").json()["revocations"]]
    assert stored.count(fingerprint(factory.certificate)) == 1, stored
    refused_everywhere(hub, "/devices/challenge", below.chain_pem(), PEM_TYPE, 403, "cert_revoked")
    refused_everywhere(hub, "/devices/challenge", chain.device("new-below").chain_pem(), PEM_TYPE, 403, "cert_revoked")
    for body in pending:  # challenges issued before the revocation
        answer = fresh(hub, "/devices/proof", body, JSON_TYPE)
        assert (answer.status, answer.code) == (403, "cert_revoked"), answer
    conn = hub.connect()
    assert authenticate(conn, unrelated)["device_id"] == "elsewhere"
    conn.close()


def test_a_disabled_device_is_refused_at_both_steps_on_every_worker(hub, issuers):
    chain = issuers(depth=1)
    device, sibling = chain.device("switched-off"), chain.device("sibling")
    pending = [proof_of(device, get_challenge(hub, device)) for _ in range(6)]
    assert admin(hub, "POST", "/devices/switched-off/disable").status == 200
    refused_everywhere(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE, 403, "device_disabled")
    for body in pending:
        answer = fresh(hub, "/devices/proof", body, JSON_TYPE)
        assert (answer.status, answer.code) == (403, "device_disabled"), answer
    conn = hub.connect()
    assert authenticate(conn, sibling)["device_id"] == "sibling"
    assert admin(hub, "POST", "/devices/switched-off/enable").status == 200
    assert authenticate(conn, device)["device_id"] == "switched-off"
    conn.close()


def test_a_ca_removed_mid_run_admits_nothing_after_the_removal_is_acknowledged(hub):
    doomed, survivor = registered(hub, depth=1), registered(hub, depth=1)
    doomed_id = fingerprint(doomed.company.certificate)
    log: list[tuple[str, float, float, int, str | None, str]] = []  # (who, sent, answered, status, code, device)
    stop = threading.Event()

    def storm(who: str, chain: SupplyChain, offset: int):
        devices = [chain.device(f"{who}-{offset}-{i}") for i in range(8)]
        conns = [hub.connect() for _ in range(2)]
        n = 0
        while not stop.is_set():
            device, conn = devices[n % len(devices)], conns[n % len(conns)]
            n += 1
            sent = time.monotonic()
            conn.request("POST", "/devices/challenge", body=device.chain_pem(), headers=PEM_TYPE)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                log.append((who, sent, time.monotonic(), reply.status, json.loads(data)["error"], device.device_id))
                continue
            body = proof_of(device, json.loads(data)["challenge"])
            sent = time.monotonic()
            conn.request("POST", "/devices/proof", body=body, headers=JSON_TYPE)
            reply = conn.getresponse()
            data = reply.read()
            code = None if reply.status == 200 else json.loads(data)["error"]
            log.append((who, sent, time.monotonic(), reply.status, code, device.device_id))
        for conn in conns:
            conn.close()

    threads = [
        threading.Thread(target=storm, args=(who, chain, i))
        for i in range(2)
        for who, chain in (("doomed", doomed), ("survivor", survivor))
    ]
    for t in threads:
        t.start()
    time.sleep(0.8)
    reply = admin(hub, "DELETE", f"/cas/{doomed_id}")
    acknowledged, acknowledged_wall = time.monotonic(), time.time()
    assert reply.status == 200, reply
    time.sleep(0.8)
    stop.set()
    for t in threads:
        t.join()
    before = [e for e in log if e[0] == "doomed" and e[2] < acknowledged]
    after = [e for e in log if e[0] == "doomed" and e[1] > acknowledged]
    assert any(e[3] == 200 for e in before), "the doomed CA's devices were not being admitted before"
    assert after, "no doomed request was sent after the removal"
    assert all((e[3], e[4]) == (401, "chain_untrusted") for e in after), [e for e in after if e[3] != 401][:5]
    survivors = [e for e in log if e[0] == "survivor"]
    assert survivors and all(e[3] == 200 for e in survivors), [e for e in survivors if e[3] != 200][:5]
    # The stored state: the CA is gone, the other is not; each doomed device is on record with exactly
    # the admissions it was told of, the last of them before the removal was acknowledged.
    listed = {c["id"]: c["status"] for c in admin(hub, "GET", "/cas").json()["cas"]}
    assert doomed_id not in listed and listed[fingerprint(survivor.company.certificate)] == "verified", listed
    assert admin(hub, "GET", f"/cas/{doomed_id}").status == 404
    admitted = Counter(e[5] for e in log if e[0] == "doomed" and e[3] == 200)  # proofs: challenges log only refusals
    assert admitted
    for device_id, count in admitted.items():
        entry = settled_entry(hub, device_id)
        assert entry["authentications"] == count and entry["last_authenticated"] <= acknowledged_wall, (
            device_id,
            count,
            entry,
        )


# -- identities the engine cannot carry across workers ---------------------------------------------------------
def long_id_device(chain: SupplyChain, device_id: str) -> Device:
    """A device whose CN is ``device_id`` however long: cryptography's builder stops at 64 characters,
    so the issuer signs a TBSCertificate with the subject swapped in."""
    from hostile import der as D

    template = chain.device("placeholder")
    tbs = D.TBS.of(template.certificate)
    tbs.subject = D.seq(D.tlv(0x31, D.seq(D.oid("2.5.4.3"), D.tlv(0x0C, device_id.encode()))))
    body = tbs.encode()
    der = D.seq(body, tbs.signature, D.bits(chain.issuer.sign_tbs(body)))
    return Device(device_id, template._key, x509.load_der_x509_certificate(der), template.chain)


def test_a_device_id_too_long_for_a_portable_challenge_is_refused(hub, issuers):
    # A device id over 1,024 bytes would make a challenge token only its issuing worker could open.
    chain = issuers(depth=1)
    device = long_id_device(chain, "d" * 5000)
    answers = on_every_worker(hub, "/devices/challenge", device.chain_pem(), PEM_TYPE)
    assert {(a.status, a.code) for a in answers} == {(400, "device_id_missing")}, answers
