"""The hub's MQTT-over-TLS listener (``--mqtts-port``), in both validation modes: every refusal first
(no certificate, expired, revoked, foreign and broken chains, stalled handshakes, a CONNECT that never
comes, malformed and oversized packets, a client id that is not the CN, disabled devices, the quota),
each counted by reason in /metrics with the worker still serving; then admission, the registry's first-
connection record, keepalive, PUBLISH, DISCONNECT and session resumption."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import socket
import ssl

import pytest
from chainkit import CA, der, make_cert, new_key, trust
from chainkit import engine as make_engine
from conftest import serve_hub
from test_service import eventually, metric, metric_values

from devicekit.hubclient import HubClient
from devicekit.mqtts import MqttsClient, MqttsFailure, MqttsTarget
from devicekit.pki import Device, SupplyChain
from hubsim import AuthError, mqtt

CONNECT_TIMEOUT = 1.0  # the hub's --mqtts-connect-timeout in these tests (seconds)


@pytest.fixture(scope="module")
def fleet():
    return SupplyChain.build(2)


@pytest.fixture(scope="module", params=["cached", "full"])
def hub(request, tmp_path_factory, fleet):
    args = ("--mqtts-port", "0", "--mqtts-validation", request.param, "--mqtts-connect-timeout", str(CONNECT_TIMEOUT))
    with contextlib.closing(serve_hub(tmp_path_factory, f"mqtts-{request.param}", workers=1, args=args)) as hubs:
        for process in hubs:  # closing: a failure before the yield still stops the hub
            HubClient(process.url, token=process.admin_token()).ensure_ca(fleet.company)
            process.mode = request.param
            yield process


@pytest.fixture(scope="module")
def client(hub):
    return MqttsClient(MqttsTarget.from_url(hub.mqtts_url, ca_file=hub.tls_ca))


def refused(hub, code: str, step: str = "mqtts") -> float:
    return metric(metric_values(hub), "certstorm_authentications_total", outcome="refused", step=step, code=code)


def admitted(hub, step: str = "mqtts") -> float:
    return metric(metric_values(hub), "certstorm_authentications_total", outcome="admitted", step=step, code="")


def counted(hub, code: str, before: float, step: str = "mqtts") -> None:
    eventually(lambda: _at_least(refused(hub, code, step), before + 1), timeout=5.0)


def _at_least(value: float, floor: float) -> None:
    assert value >= floor, (value, floor)


def still_serving(hub, client, fleet, name: str) -> None:
    device = fleet.device(name)
    client.connect(device.device_id, device.chain_der(), device.private_key).close()


def expect_refusal(client, device: Device, codes: tuple[str, ...], **kwargs) -> MqttsFailure:
    with pytest.raises(MqttsFailure) as caught:
        client.connect(device.device_id, device.chain_der(), device.private_key, **kwargs).close()
    assert caught.value.code in codes, caught.value
    return caught.value


def tls_socket(hub) -> ssl.SSLSocket:
    """A TLS client that verifies the hub and presents no certificate."""
    ctx = ssl.create_default_context(cafile=hub.tls_ca)
    return ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", hub.mqtts_port), timeout=10), server_hostname="127.0.0.1"
    )


def closed_by_hub(sock) -> bool:
    """True once the hub closed the connection (EOF, reset, or a TLS alert), waiting at most 10 s."""
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except (ssl.SSLError, ConnectionError):
        pass
    except TimeoutError:
        return False
    return True


# -- the codec and the engine, without a network ----------------------------------------------------------
def test_connect_round_trip_and_long_remaining_length():
    packet = mqtt.encode_connect("d" * 300, username="hub/d/?api-version=2021-04-12", keepalive=30)
    found = mqtt.read_packet(packet + b"\xc0", 1024)
    assert found is not None and found[1] == len(packet)  # the trailing byte is the next packet's
    assert mqtt.parse_connect(found[0]) == mqtt.Connect("d" * 300, "hub/d/?api-version=2021-04-12", 30, 4)
    assert mqtt.read_packet(packet[:-1], 1024) is None
    with pytest.raises(mqtt.MqttError) as caught:
        mqtt.read_packet(packet[:3], 100)  # refused from its announced size, before the body arrives
    assert caught.value.reason == "mqtt_oversized"


def test_engine_admits_a_proven_chain_only_for_its_own_cn():
    eng = make_engine()
    root = CA("root")
    trust(eng, root)
    inter = CA("inter", parent=root)
    _key, leaf = inter.issue("dev-1")
    chain = [der(leaf), der(inter.cert)]
    with pytest.raises(AuthError) as caught:
        eng.admit_proven(chain, "dev-2")
    assert caught.value.code == "device_id_mismatch"
    assert eng.registry.get("dev-1") is None  # a refused claim records nothing
    first = eng.admit_proven(chain, "dev-1")
    assert first.first_connection and first.device_id == "dev-1"
    assert not eng.admit_proven(chain, "dev-1").first_connection
    with pytest.raises(AuthError) as caught:
        eng.admit_proven(chain[:1], "dev-1")  # the engine never fills a gap in the chain
    assert caught.value.code == "chain_untrusted"
    eng.revoke(hashlib.sha256(der(inter.cert)).hexdigest())
    with pytest.raises(AuthError) as caught:
        eng.admit_verified("dev-1", "dev-1", first.leaf, first.path)  # a resumed session is re-checked
    assert caught.value.code == "cert_revoked"


# -- refusals -------------------------------------------------------------------------------------------
def test_client_without_certificate_is_refused(hub, client, fleet):
    before = refused(hub, "no_certificate")
    with tls_socket(hub) as sock:  # TLS 1.3: the client's handshake ends before the hub's alert arrives
        try:
            sock.sendall(mqtt.encode_connect("dev-nocert"))
        except (ssl.SSLError, ConnectionError):
            pass
        assert closed_by_hub(sock)
    counted(hub, "no_certificate", before)
    still_serving(hub, client, fleet, "after-nocert")


def test_expired_device_certificate_is_refused(hub, client, fleet):
    key = new_key()
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = fleet.issuer.sign_device(
        "dev-expired", key.public_key(), not_before=past, not_after=past + dt.timedelta(days=1)
    )
    code = "cert_expired"
    before = refused(hub, code)
    expect_refusal(
        client, Device("dev-expired", key, cert, fleet.intermediates()), ("connack_5", "tls_handshake_failed")
    )
    counted(hub, code, before)
    still_serving(hub, client, fleet, "after-expired")


def test_foreign_root_is_refused(hub, client):
    foreign = SupplyChain.build(2).device("dev-foreign")
    before = refused(hub, "chain_untrusted")
    failure = expect_refusal(client, foreign, ("connack_5", "tls_handshake_failed"))
    # full: OpenSSL refuses in the handshake (alert); cached: the engine refuses with CONNACK 5
    assert failure.code == ("tls_handshake_failed" if hub.mode == "full" else "connack_5")
    counted(hub, "chain_untrusted", before)


def test_broken_chain_is_refused(hub, client, fleet):
    """A leaf that names the fleet's issuer but was signed by another key."""
    key, impostor = new_key(), new_key()
    issuer = fleet.issuer.certificate
    cert = make_cert("dev-broken", key.public_key(), issuer.subject, impostor, ca=False)
    before = refused(hub, "chain_untrusted")
    expect_refusal(
        client, Device("dev-broken", key, cert, fleet.intermediates()), ("connack_5", "tls_handshake_failed")
    )
    counted(hub, "chain_untrusted", before)
    still_serving(hub, client, fleet, "after-broken")


def test_incomplete_chain_is_refused(hub, client, fleet):
    """The device leaves out the intermediates: the hub never fills gaps."""
    device = fleet.device("dev-no-intermediates")
    before = refused(hub, "chain_untrusted")
    with pytest.raises(MqttsFailure):
        client.connect(device.device_id, device.chain_der()[:1], device.private_key).close()
    counted(hub, "chain_untrusted", before)


def test_not_tls_at_all_is_refused(hub, client, fleet):
    before = refused(hub, "tls_handshake_failed")
    with socket.create_connection(("127.0.0.1", hub.mqtts_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_hub(sock)
    counted(hub, "tls_handshake_failed", before)
    still_serving(hub, client, fleet, "after-garbage")


def test_stalled_handshake_is_closed(hub, client, fleet):
    before = refused(hub, "handshake_timeout")
    with socket.create_connection(("127.0.0.1", hub.mqtts_port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        assert closed_by_hub(sock)
    counted(hub, "handshake_timeout", before)
    still_serving(hub, client, fleet, "after-stall")


def test_connect_that_never_comes_is_closed(hub, client, fleet):
    device = fleet.device("dev-silent")
    before = refused(hub, "connect_timeout")
    connection = client.open(device.chain_der(), device.private_key)
    try:
        with pytest.raises(MqttsFailure) as caught:
            connection.read_packet("connack")
        assert caught.value.code in ("closed_by_server", "connection_reset")
    finally:
        connection.close(disconnect=False)
    counted(hub, "connect_timeout", before)


def test_silence_beyond_the_keepalive_is_closed(hub, client, fleet):
    """A connected device that announced a 1 s keepalive and then says nothing is closed after 1.5 s."""
    device = fleet.device("dev-keepalive")
    before = refused(hub, "keepalive_expired")
    connection = client.open(device.chain_der(), device.private_key)
    try:
        connection.send(mqtt.encode_connect(device.device_id, keepalive=1))
        assert mqtt.parse_connack(connection.read_packet("connack")) == mqtt.ACCEPTED
        connection.ping()  # keepalive traffic is answered ...
        with pytest.raises(MqttsFailure) as caught:  # ... and silence is not
            connection.read_packet("idle")
        assert caught.value.code in ("closed_by_server", "connection_reset")
    finally:
        connection.close(disconnect=False)
    counted(hub, "keepalive_expired", before)


@pytest.mark.parametrize(
    "packet,code",
    [
        (b"\x10\xff\xff\xff\xff\x01", "mqtt_malformed"),  # remaining length of five bytes
        (b"\x10\x80\x80\x40", "mqtt_oversized"),  # announces a 1 MiB CONNECT
        (b"\x10\x04\x00\x04MQ", "mqtt_malformed"),  # CONNECT that ends inside its protocol name
        (b"\x30\x03\x00\x01t", "mqtt_protocol"),  # PUBLISH before CONNECT
        (b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x05ab", "mqtt_malformed"),  # client id shorter than said
    ],
)
def test_bad_mqtt_packets_are_refused(hub, client, fleet, packet, code):
    device = fleet.device("dev-bad-mqtt")
    before = refused(hub, code)
    connection = client.open(device.chain_der(), device.private_key)
    try:
        connection.send(packet)
        with pytest.raises(MqttsFailure):
            connection.read_packet("connack")
    finally:
        connection.close(disconnect=False)
    counted(hub, code, before)
    still_serving(hub, client, fleet, "after-bad-mqtt")


def test_client_id_that_is_not_the_cn_is_refused(hub, client, fleet):
    device = fleet.device("dev-honest")
    before = refused(hub, "device_id_mismatch")
    expect_refusal(client, device, ("connack_5",), client_id="dev-someone-else")
    counted(hub, "device_id_mismatch", before)
    assert hub.call("GET", "/devices/dev-someone-else", token=hub.admin_token()).status == 404


def test_disabled_device_is_refused(hub, client, fleet):
    device = fleet.device("dev-disabled")
    assert hub.call("POST", "/devices/dev-disabled/disable", token=hub.admin_token()).status == 200
    before = refused(hub, "device_disabled")
    eventually(lambda: expect_refusal(client, device, ("connack_5",)), timeout=5.0)
    counted(hub, "device_disabled", before)
    assert hub.call("POST", "/devices/dev-disabled/enable", token=hub.admin_token()).status == 200
    eventually(lambda: client.connect(device.device_id, device.chain_der(), device.private_key).close(), 5.0)


def test_revoked_device_is_refused_also_on_resumption(hub, client, fleet):
    device = fleet.device("dev-revoked")
    connection = client.connect(device.device_id, device.chain_der(), device.private_key)
    session = connection.session()
    connection.close()
    fingerprint = hashlib.sha256(device.chain_der()[0]).hexdigest()
    assert (
        hub.call("POST", "/revocations", json_body={"fingerprint": fingerprint}, token=hub.admin_token()).status == 201
    )
    before = refused(hub, "cert_revoked", "mqtts_resumed")
    expect_refusal(client, device, ("connack_5",), session=session)  # a resumed session skips no revocation
    counted(hub, "cert_revoked", before, "mqtts_resumed")
    before = refused(hub, "cert_revoked")
    expect_refusal(client, device, ("connack_5", "tls_handshake_failed"))
    counted(hub, "cert_revoked", before)


def test_quota_answers_connack_3(tmp_path_factory, fleet):
    args = ("--mqtts-port", "0", "--quota", "0.1")
    with contextlib.closing(serve_hub(tmp_path_factory, "mqtts-quota", workers=1, args=args)) as hubs:
        process = next(hubs)  # closing: a failure below still stops the hub
        HubClient(process.url, token=process.admin_token()).ensure_ca(fleet.company)
        quota_client = MqttsClient(MqttsTarget.from_url(process.mqtts_url, ca_file=process.tls_ca))
        codes = []
        for i in range(3):  # the bucket holds one token and refills one per 10 s
            device = fleet.device(f"dev-quota-{i}")
            try:
                quota_client.connect(device.device_id, device.chain_der(), device.private_key).close()
                codes.append("ok")
            except MqttsFailure as exc:
                codes.append(exc.code)
        assert codes[0] == "ok" and "connack_3" in codes[1:], codes
        counted(process, "throttled", 0)


# -- admission ------------------------------------------------------------------------------------------
def test_admission_records_the_first_connection(hub, client, fleet):
    device = fleet.device(f"dev-first-{hub.mode}")
    before = admitted(hub)
    connection = client.connect(device.device_id, device.chain_der(), device.private_key)
    connection.ping()
    connection.send(b"\x32\x08\x00\x01t\x00\x07hi!")  # PUBLISH QoS 1, packet id 7
    puback = connection.read_packet("puback")
    assert (puback.kind, puback.body) == (mqtt.PUBACK, b"\x00\x07")
    connection.close()
    entry = eventually(lambda: _registered(hub, device.device_id), timeout=5.0)
    assert entry["authentications"] == 1
    assert entry["ca"] == HubClient(hub.url, token=hub.admin_token()).ensure_ca(fleet.company)["id"]
    eventually(lambda: _at_least(admitted(hub), before + 1), timeout=5.0)


def _registered(hub, device_id: str) -> dict:
    reply = hub.call("GET", f"/devices/{device_id}", token=hub.admin_token())
    assert reply.status == 200, reply
    return reply.json()


def test_resumed_session_is_admitted_without_chain_validation(hub, client, fleet):
    device = fleet.device(f"dev-resume-{hub.mode}")
    connection = client.connect(device.device_id, device.chain_der(), device.private_key)
    session = connection.session()
    connection.close()
    before = admitted(hub, "mqtts_resumed")
    client.connect(device.device_id, device.chain_der(), device.private_key, session=session).close()
    eventually(lambda: _at_least(admitted(hub, "mqtts_resumed"), before + 1), timeout=5.0)


def test_tls_1_2_is_served(hub, fleet):
    device = fleet.device("dev-tls12")
    old = MqttsClient(MqttsTarget.from_url(hub.mqtts_url, ca_file=hub.tls_ca, tls_version="1.2"))
    old.connect(device.device_id, device.chain_der(), device.private_key).close()


def test_hub_tls_files_are_kept_across_restarts(tmp_path, fleet):
    from certstorm.processes import HubProcess

    db = tmp_path / "hub.db"
    with HubProcess(db, workers=1, args=("--mqtts-port", "0")) as first:
        ca = open(first.tls_ca, "rb").read()
        key_mode = (db.parent / "hub.db.tls" / "server.key").stat().st_mode & 0o777
    with HubProcess(db, workers=1, args=("--mqtts-port", "0")) as second:
        assert open(second.tls_ca, "rb").read() == ca
    assert key_mode == 0o600
