"""DPS's throttles as Azure documents them (docs/dps.md): registrations over ``--quota`` and the sixth
poll of a device within ten seconds are answered 429 ``throttled`` with a retry-after, counted; junk on
every endpoint and topic gets a 4xx, never a 500; DPS's own arguments are checked on one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_service import eventually, metric, metric_values

from certstorm.processes import DpsProcess
from devicekit.dps import REGISTER, DpsSession, DpsTarget
from devicekit.pki import SupplyChain


@pytest.fixture(scope="module")
def dps(tmp_path_factory):
    process = DpsProcess(
        tmp_path_factory.mktemp("dps-quota") / "dps.db", workers=1, args=("--mqtts-port", "0", "--quota", "1")
    ).start()
    try:
        yield process
    finally:
        try:
            assert process.stop() == 0
        finally:
            process.kill()
        assert " ERROR " not in process.log(), process.log()


@pytest.fixture(scope="module")
def device(dps):
    chain = SupplyChain.build(1)
    dps.register_ca(chain.company)
    return chain.device("dev-throttled")


def open_session(dps, device) -> DpsSession:
    target = DpsTarget("127.0.0.1", dps.mqtts_port, dps.id_scope, dps.tls_ca)
    return DpsSession(target).connect(device.device_id, device.chain_der(), device.private_key)


def test_registrations_over_the_quota_are_throttled(dps, device):
    session = open_session(dps, device)
    try:
        answers = [session.register(device.device_id) for _ in range(4)]
    finally:
        session.close()
    throttled = [a for a in answers if a.status == 429]
    assert throttled and all(a.body["error"] == "throttled" and a.retry_after >= 1 for a in throttled), answers
    # the others went on to the group check: no group uses this CA
    assert {a.body.get("error") for a in answers if a.status != 429} == {"enrollment_missing"}

    def counted():
        values = metric_values(dps)
        assert metric(values, "certstorm_authentications_total", outcome="refused", step="register", code="throttled")
        assert metric(values, "certstorm_throttled_total") >= len(throttled)

    eventually(counted, timeout=5.0)


def test_the_sixth_poll_within_ten_seconds_is_throttled(dps, device):
    session = open_session(dps, device)
    try:
        answers = [session.poll("0" * 32) for _ in range(6)]
    finally:
        session.close()
    assert [a.status for a in answers] == [404] * 5 + [429]
    assert answers[-1].body["error"] == "throttled" and 1 <= answers[-1].retry_after <= 10


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/hubs/x", b"{"),
        ("PUT", "/hubs/x", b'{"url": 5}'),
        ("PUT", "/hubs/x", b'{"url": "http://[::1"}'),
        ("PUT", "/hubs/x", b'{"url": "http://127.0.0.1:99999"}'),
        ("PUT", "/hubs/%00", b'{"url": "http://127.0.0.1:1"}'),
        ("PUT", "/hubs/x", b'{"url": "http://127.0.0.1:1", "token": "short"}'),
        ("PUT", "/enrollment-groups/x", b"[]"),
        ("PUT", "/enrollment-groups/x", b'{"ca": "nope", "hubs": ["x"]}'),
        ("PUT", "/enrollment-groups/" + "x" * 300, b'{"ca": "00", "hubs": []}'),
        ("DELETE", "/hubs/none", None),
        ("DELETE", "/enrollment-groups/none", None),
        ("GET", "/registrations/%ff", None),
        ("POST", "/registrations/proof", b'{"challenge": "!!", "signature": 1}'),
        ("POST", "/registrations/challenge", b"\x30\x82\xff\xff"),
        ("PATCH", "/hubs", None),
    ],
)
def test_junk_on_every_endpoint_gets_a_4xx(dps, method, path, body):
    reply = dps.admin(method, path, body)
    assert 400 <= reply.status < 500 and "error" in reply.json(), reply


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{" * 5000, b'{"registrationId": null}', b'{"payload": ' + b"[" * 3000 + b"]" * 3000 + b"}"],
)
def test_junk_on_the_register_topic_gets_a_4xx(dps, device, payload):
    session = open_session(dps, device)
    try:
        answer = session.request(REGISTER.format(rid="9"), payload)
    finally:
        session.close()
    assert 400 <= answer.status < 500 and answer.rid == "9", answer


@pytest.mark.parametrize(
    ("argument", "shown"),
    [(["--quota", "S2"], "--quota"), (["--retry-after", "61"], "--retry-after"), (["--id-scope", "a/b"], "--id-scope")],
)
def test_a_wrong_argument_gets_one_line(argument, shown):
    done = subprocess.run([sys.executable, "-m", "certstorm", "dps", *argument], capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and shown in lines[0], done.stderr
