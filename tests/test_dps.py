"""DPS as a service, with two linked hubs: every refusal first -- management calls without the token, each
bad input of the MQTT registration (a chain no enrollment group matches, a CN that is no registration id,
a username whose registration id or id scope is wrong, an unknown operation id, malformed and oversized
payloads), a disabled group and a revoked CA, the HTTP form's bad bodies -- each refused with its own
code, counted in /metrics, nothing stored changed; then provisioning over MQTT and HTTP, the spread over
the hubs, each hub agreeing with DPS, the device connecting to its hub, re-registration."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3

import pytest
from conftest import serve_hub
from test_service import eventually, metric, metric_values

from certstorm.processes import DpsProcess
from devicekit.dps import DpsSession, DpsTarget, provision
from devicekit.mqtts import MqttsClient, MqttsFailure, MqttsTarget
from devicekit.pki import SupplyChain
from hubsim import mqtt

HUB_NAMES = ("hub-a", "hub-b")


@pytest.fixture(scope="module")
def hubs(tmp_path_factory):
    """Two hubs (one worker each, MQTT listener on) that admit only the devices DPS assigned them; each
    must stop cleanly with no ERROR in its log."""
    args = ("--mqtts-port", "0", "--admission", "provisioned")
    with contextlib.ExitStack() as stack:
        serving = [serve_hub(tmp_path_factory, name, workers=1, args=args) for name in HUB_NAMES]
        started = []
        for generator in serving:
            stack.enter_context(contextlib.closing(generator))  # stops it even if a later one fails to start
            started.append(next(generator))
        yield dict(zip(HUB_NAMES, started))
        for generator in serving:
            next(generator, None)  # the clean stop and the log check


@pytest.fixture(scope="module")
def dps(tmp_path_factory, hubs):
    db = tmp_path_factory.mktemp("dps") / "dps.db"
    process = DpsProcess(db, workers=2, args=("--mqtts-port", "0", "--retry-after", "0")).start()
    try:
        for name, hub in hubs.items():
            process.link(hub, name)
        yield process
    finally:
        try:
            assert process.stop() == 0, process.log()
        finally:
            process.kill()
        assert " ERROR " not in process.log(), process.log()


@pytest.fixture(scope="module")
def fleet(dps, hubs):
    """Company-X's chain, proven on DPS and on both hubs, enrolled in an evenly weighted group."""
    chain = SupplyChain.build(1)
    chain.ca_id = dps.register_ca(chain.company, hubs.values())
    dps.enroll("fleet", chain.ca_id, "evenly", HUB_NAMES)
    return chain


@pytest.fixture(scope="module")
def target(dps):
    return DpsTarget("127.0.0.1", dps.mqtts_port, dps.id_scope, dps.tls_ca)


def enrolled(dps, hubs, name: str, **group) -> SupplyChain:
    """Another company's chain with its own group (for tests that disable or revoke)."""
    chain = SupplyChain.build(1)
    chain.ca_id = dps.register_ca(chain.company, hubs.values())
    dps.enroll(name, chain.ca_id, group.pop("allocation", "hashed"), HUB_NAMES, **group)
    return chain


def stored(dps, hubs) -> dict:
    """Everything DPS and the hubs hold about registrations and configuration."""
    out = {}
    for name, process in [("dps", dps), *hubs.items()]:
        con = sqlite3.connect(f"file:{process.db}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table not in ("changes", "meta", "sqlite_sequence"):
                    out[(name, table)] = sorted(map(repr, con.execute(f"SELECT * FROM {table}")))
        finally:
            con.close()
    return out


def refused(dps, step: str, code: str) -> float:
    return metric(metric_values(dps), "certstorm_authentications_total", outcome="refused", step=step, code=code)


def counted(dps, step: str, code: str, before: float) -> None:
    def check():
        assert refused(dps, step, code) >= before + 1, (step, code)

    eventually(check, timeout=5.0)


@contextlib.contextmanager
def nothing_stored_changes(dps, hubs):
    before = stored(dps, hubs)
    yield
    assert stored(dps, hubs) == before


def session(target: DpsTarget, device, **kwargs) -> DpsSession:
    return DpsSession(target).connect(device.device_id, device.chain_der(), device.private_key, **kwargs)


# -- management calls need the token ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/hubs/intruder", {"url": "http://127.0.0.1:1"}),
        ("DELETE", "/hubs/hub-a", None),
        ("GET", "/hubs", None),
        ("PUT", "/enrollment-groups/fleet", {"ca": "00" * 32, "hubs": ["hub-a"], "enabled": False}),
        ("GET", "/enrollment-groups/fleet", None),
        ("DELETE", "/enrollment-groups/fleet", None),
        ("GET", "/registrations/dev-1", None),
        ("POST", "/cas", None),
        ("GET", "/audit", None),
    ],
)
def test_management_calls_need_the_token(dps, hubs, fleet, method, path, body):
    before = metric(metric_values(dps), "certstorm_management_refused_total", code="admin_token_missing")
    with nothing_stored_changes(dps, hubs):
        reply = dps.call(method, path, json_body=body)
    assert reply.status == 401 and reply.json()["error"] == "admin_token_missing"

    def check():
        after = metric(metric_values(dps), "certstorm_management_refused_total", code="admin_token_missing")
        assert after >= before + 1

    eventually(check, timeout=5.0)


# -- bad input at CONNECT: CONNACK 5, counted -----------------------------------------------------------------
def _connect_refused(dps, hubs, target, device, code, *, client=None, client_id=None):
    before = refused(dps, "mqtts", code)
    with nothing_stored_changes(dps, hubs), pytest.raises(MqttsFailure) as caught:
        DpsSession(target, client).connect(
            device.device_id, device.chain_der(), device.private_key, client_id=client_id
        )
    assert caught.value.code == "connack_5", caught.value
    counted(dps, "mqtts", code, before)


def test_a_chain_to_no_registered_ca_is_refused(dps, hubs, fleet, target):
    _connect_refused(dps, hubs, target, SupplyChain.build(1).device("stranger-1"), "chain_untrusted")


def test_a_cn_that_is_no_registration_id_is_refused(dps, hubs, fleet, target):
    _connect_refused(dps, hubs, target, fleet.device("not a registration id"), "registration_id_invalid")


def test_a_client_id_other_than_the_cn_is_refused(dps, hubs, fleet, target):
    _connect_refused(dps, hubs, target, fleet.device("dev-cid"), "device_id_mismatch", client_id="dev-other")


def test_a_username_naming_another_registration_id_is_refused(dps, hubs, fleet, target):
    other = MqttsTarget(
        "127.0.0.1", dps.mqtts_port, dps.tls_ca, tls_version="1.2",
        username=f"{dps.id_scope}/registrations/dev-other/api-version=2019-03-31",
    )  # fmt: skip
    device = fleet.device("dev-user")
    _connect_refused(dps, hubs, target, device, "registration_id_mismatch", client=MqttsClient(other))


def test_a_wrong_id_scope_is_refused(dps, hubs, fleet, target):
    wrong = DpsTarget("127.0.0.1", dps.mqtts_port, "0ne00000000", dps.tls_ca)
    _connect_refused(dps, hubs, wrong, fleet.device("dev-scope"), "id_scope_mismatch")


def test_a_username_not_in_dps_form_is_refused(dps, hubs, fleet, target):
    other = MqttsTarget("127.0.0.1", dps.mqtts_port, dps.tls_ca, tls_version="1.2", username="{device_id}")
    _connect_refused(dps, hubs, target, fleet.device("dev-form"), "malformed_input", client=MqttsClient(other))


def test_a_revoked_ca_is_refused(dps, hubs, target):
    chain = enrolled(dps, hubs, "revoked")
    device = chain.device("dev-revoked")
    reply = dps.admin("POST", "/revocations", json_body={"fingerprint": chain.ca_id})
    assert reply.status == 201
    _connect_refused(dps, hubs, target, device, "cert_revoked")


# -- bad input on the register and poll topics: the status in the response topic, counted ------------------
def _topic_refused(dps, hubs, answer_of, status: int, code: str, step: str = "register"):
    before = refused(dps, step, code)
    with nothing_stored_changes(dps, hubs):
        answer = answer_of()
    assert (answer.status, answer.body.get("error")) == (status, code), answer
    counted(dps, step, code, before)


def test_a_verified_ca_without_an_enrollment_group_is_refused(dps, hubs, target):
    chain = SupplyChain.build(1)
    dps.register_ca(chain.company)
    device = chain.device("dev-nogroup")
    open_session = session(target, device)
    try:
        _topic_refused(dps, hubs, lambda: open_session.register(device.device_id), 401, "enrollment_missing")
    finally:
        open_session.close()


def test_a_disabled_group_refuses(dps, hubs, target):
    chain = enrolled(dps, hubs, "disabled", enabled=False)
    device = chain.device("dev-disabled")
    open_session = session(target, device)
    try:
        _topic_refused(dps, hubs, lambda: open_session.register(device.device_id), 403, "enrollment_disabled")
    finally:
        open_session.close()


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"not json", 400, "malformed_input"),
        (b"[1, 2]", 400, "malformed_input"),
        (b'{"registrationId": 7}', 400, "malformed_input"),
        (b'{"registrationId": "dev-someone-else"}', 401, "registration_id_mismatch"),
        (b'{"registrationId": "dev-payload", "payload": "' + b"x" * 9000 + b'"}', 413, "upload_too_large"),
    ],
)
def test_a_bad_registration_payload_is_refused(dps, hubs, fleet, target, payload, status, code):
    device = fleet.device("dev-payload")
    open_session = session(target, device)
    try:
        _topic_refused(dps, hubs, lambda: open_session.register(device.device_id, payload), status, code)
    finally:
        open_session.close()


def test_an_unknown_operation_id_is_refused(dps, hubs, fleet, target):
    device = fleet.device("dev-operation")
    open_session = session(target, device)
    try:
        _topic_refused(dps, hubs, lambda: open_session.poll("0" * 32), 404, "operation_not_found", step="poll")
    finally:
        open_session.close()


def test_another_devices_operation_is_not_shown(dps, hubs, fleet, target):
    owner = fleet.device("dev-owner")
    assigned = provision(target, owner.device_id, owner.chain_der(), owner.private_key, min_wait=0.05)
    snoop = fleet.device("dev-snoop")
    open_session = session(target, snoop)
    try:
        _topic_refused(dps, hubs, lambda: open_session.poll(assigned.operation_id), 404, "operation_not_found", "poll")
    finally:
        open_session.close()


def test_an_oversized_packet_closes_the_connection(dps, hubs, fleet, target):
    device = fleet.device("dev-oversized")
    open_session = session(target, device)
    before = refused(dps, "mqtts", "mqtt_oversized")
    try:
        with nothing_stored_changes(dps, hubs), pytest.raises(MqttsFailure):
            open_session.register(device.device_id, b"{" + b" " * 20000 + b"}")
    finally:
        open_session.close()
    counted(dps, "mqtts", "mqtt_oversized", before)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"not a certificate", "application/x-pem-file", 400, "malformed_input"),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
def test_the_http_form_refuses_bad_chains(dps, hubs, fleet, body, content_type, status, code):
    with nothing_stored_changes(dps, hubs):
        reply = dps.call("POST", "/registrations/challenge", body, headers={"Content-Type": content_type})
    assert reply.status == status and reply.json()["error"] == code


def test_the_http_form_refuses_a_bad_proof(dps, hubs, fleet):
    device = fleet.device("dev-http-bad")
    challenge = dps.call("POST", "/registrations/challenge", device.chain_pem()).json()
    proof = {"challenge": challenge["challenge"], "signature": base64.b64encode(b"\0" * 70).decode()}
    with nothing_stored_changes(dps, hubs):
        reply = dps.call("POST", "/registrations/proof", json_body=proof)
    assert reply.status == 401 and reply.json()["error"] == "pop_invalid"


# -- provisioning -----------------------------------------------------------------------------------------------
def test_devices_are_spread_evenly_and_each_hub_agrees(dps, hubs, fleet, target):
    assignments = {}
    for i in range(8):
        device = fleet.device(f"dev-spread-{i}")
        assignments[device.device_id] = provision(
            target, device.device_id, device.chain_der(), device.private_key, min_wait=0.05
        )
    placed = [a.hub for a in assignments.values()]
    assert set(placed) == set(HUB_NAMES) and abs(placed.count("hub-a") - placed.count("hub-b")) <= 1, placed
    for device_id, assignment in assignments.items():
        assert assignment.substatus == "initialAssignment" and assignment.device_id == device_id
        registration = dps.admin("GET", f"/registrations/{device_id}").json()
        assert registration["assignedHub"] == assignment.hub
        recorded = hubs[assignment.hub].admin("GET", f"/devices/{device_id}").json()["provisioned"]
        assert recorded["thumbprint"] == registration["thumbprint"] and recorded["source"] == f"dps:{dps.id_scope}"

    def check():
        values = metric_values(dps)
        total = sum(v for (name, _), v in values.items() if name == "certstorm_dps_assignments_total")
        assert total >= 8

    eventually(check, timeout=5.0)


def test_a_provisioned_device_connects_to_its_hub_and_re_registers_to_the_same(dps, hubs, fleet, target):
    device = fleet.device("dev-connect")
    first = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.05)
    hub = hubs[first.hub]
    client = MqttsClient(MqttsTarget("127.0.0.1", hub.mqtts_port, hub.tls_ca))
    connection = client.connect(device.device_id, device.chain_der(), device.private_key)
    connection.send(mqtt.encode_publish("devices/dev-connect/messages/events/", b"hello", qos=1, packet_id=7))
    assert connection.read_packet("puback").kind == mqtt.PUBACK
    connection.close()
    again = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.05)
    assert (again.hub, again.substatus) == (first.hub, "unchanged")
    assert again.state["etag"] == "2"


def test_a_hub_refuses_a_device_dps_did_not_assign_to_it(dps, hubs, fleet, target):
    device = fleet.device("dev-elsewhere")
    assigned = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.05)
    other = hubs[next(name for name in HUB_NAMES if name != assigned.hub)]
    client = MqttsClient(MqttsTarget("127.0.0.1", other.mqtts_port, other.tls_ca))
    with pytest.raises(MqttsFailure) as caught:
        client.connect(device.device_id, device.chain_der(), device.private_key)
    assert caught.value.code == "connack_5"
    reply = other.call("POST", "/devices/challenge", device.chain_pem())
    assert reply.status == 403 and reply.json()["error"] == "device_not_provisioned"
    never = fleet.device("dev-never-provisioned")  # and a device DPS never saw, at the assigned hub too
    reply = hubs[assigned.hub].call("POST", "/devices/challenge", never.chain_pem())
    assert reply.status == 403 and reply.json()["error"] == "device_not_provisioned"

    def counted():
        values = metric_values(other)
        code = "device_not_provisioned"
        assert metric(values, "certstorm_authentications_total", outcome="refused", step="mqtts", code=code) >= 1

    eventually(counted, timeout=5.0)


def test_the_http_form_provisions(dps, hubs, fleet):
    device = fleet.device("dev-http")
    challenge = dps.call("POST", "/registrations/challenge", device.chain_pem()).json()
    signature = base64.b64encode(device.sign(base64.b64decode(challenge["challenge"]))).decode()
    reply = dps.call(
        "POST", "/registrations/proof", json_body={"challenge": challenge["challenge"], "signature": signature}
    )
    assert reply.status == 200, reply
    doc = reply.json()
    assert doc["status"] == "assigned" and doc["registrationState"]["assignedHub"] in HUB_NAMES
    hub = hubs[doc["registrationState"]["assignedHub"]]
    assert hub.admin("GET", "/devices/dev-http").json()["provisioned"]["detail"]["group"] == "fleet"


def test_groups_and_hubs_are_listed_without_tokens(dps, hubs, fleet):
    listed = dps.admin("GET", "/hubs").json()["hubs"]
    assert [h["name"] for h in listed] == list(HUB_NAMES)
    text = json.dumps(listed)
    assert all(h.admin_token() not in text for h in hubs.values())
    assert dps.admin("GET", "/enrollment-groups/fleet").json()["allocation"] == "evenly"
    assert dps.admin("GET", "/enrollment-groups/nope").json()["error"] == "enrollment_group_not_found"
    assert dps.admin("GET", "/registrations/nobody").json()["error"] == "registration_not_found"
    assert dps.admin("DELETE", "/hubs/hub-a").status == 400  # a group uses it


def test_a_re_provisioned_certificate_replaces_the_old_one_on_every_worker(tmp_path_factory):
    """DPS writes a device again with a new certificate: the old one is refused at once by every worker of
    the hub, including those that admitted it before (their memo of the identity is dropped through the
    change log), and the new one is admitted."""
    from cryptography.hazmat.primitives import hashes

    from devicekit.httpdevice import authenticate, register_and_prove
    from devicekit.hubclient import HubError

    def thumbprint(device) -> str:
        return device.certificate.fingerprint(hashes.SHA256()).hex()

    chain = SupplyChain.build(depth=2)
    old, new = chain.device("dev-moved", seed=1), chain.device("dev-moved", seed=2)
    serving = serve_hub(tmp_path_factory, "re-provisioned", workers=2, args=("--admission", "provisioned"))
    hub = next(serving)
    try:
        register_and_prove(hub, chain.company)
        for device in (old, new):
            body = {"source": "dps-test", "detail": {}, "thumbprint": thumbprint(device)}
            assert hub.admin("PUT", "/devices/dev-moved", json_body=body).status == 200
            if device is old:
                for conn in hub.worker_connections().values():  # every worker remembers the old identity
                    with contextlib.closing(conn):
                        assert authenticate(conn, old)["device_id"] == "dev-moved"
        for conn in hub.worker_connections().values():
            with contextlib.closing(conn):
                with pytest.raises(HubError) as refused:
                    authenticate(conn, old)
                assert refused.value.status == 403 and refused.value.code == "device_not_provisioned"
                assert authenticate(conn, new)["device_id"] == "dev-moved"
    finally:
        next(serving, None)
