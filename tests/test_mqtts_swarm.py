"""The swarm's ``mqtts`` transport end to end: ``locust -f loadgen --host mqtts://...`` against the hub's
TLS listener (both validation modes, resumption, held connections with keepalive) -- and bad options."""

from __future__ import annotations

import subprocess

import pytest
from conftest import serve_hub
from test_service import eventually, metric, metric_values
from test_swarm import LOCUST, ROOT, swarm

DEVICES = 60


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "mqtts-swarm", workers=1, args=("--mqtts-port", "0"))


def mqtts_swarm(hub, results, cache, *args):
    return swarm(
        hub,
        results,
        cache,
        "--hub-url",
        hub.url,
        "--tls-ca",
        hub.tls_ca,
        "--devices",
        str(DEVICES),
        *args,
        host=hub.mqtts_url,
    )


def admitted(hub, step: str) -> float:
    return metric(metric_values(hub), "certstorm_authentications_total", outcome="admitted", step=step, code="")


def test_two_passes_with_resumption_from_several_source_addresses(hub, cache, tmp_path):
    before = {step: admitted(hub, step) for step in ("mqtts", "mqtts_resumed")}
    rc, s, out = mqtts_swarm(
        hub, tmp_path, cache, "--passes", "2", "-u", "4", "-r", "100", "-t", "60", "--resume", "--source-addresses", "3"
    )
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] == 2 * DEVICES and a["failed_attempts"] == 0, a
    assert a["resumed_offers"] == DEVICES  # the second pass offered every device's session
    assert s["devices"]["distinct_admitted"] == DEVICES and s["devices"]["duplicates_within_a_pass"] == 0
    for name in ("tcp_connect", "tls_handshake", "connack", "auth"):
        assert s["latency_us"][name]["count"] == 2 * DEVICES, name
    for name in ("MQTTS tcp connect", "MQTTS tls handshake", "MQTTS connack"):
        assert s["locust"][name]["requests"] == 2 * DEVICES and s["locust"][name]["failures"] == 0, name
    assert not any(name.startswith("AUTH") for name in s["locust"])  # Locust counts connection stages only
    # the hub validated each chain once and resumed each session once (one worker: every ticket is its own)
    eventually(lambda: _delta(hub, before, {"mqtts": DEVICES, "mqtts_resumed": DEVICES}), timeout=5.0)
    entry = hub.call("GET", "/devices/device-000007", token=hub.admin_token()).json()
    assert entry["authentications"] >= 2, entry


def _delta(hub, before, expected):
    got = {step: admitted(hub, step) - before[step] for step in expected}
    assert got == expected, got


def test_a_held_population_outlives_its_single_pass(hub, cache, tmp_path):
    """With --passes 1 and --hold, the run goes on until -t holding what the pass admitted: each device is
    admitted once, and keepalives flow after the pass is done (the pass takes 0.2 s at 50/s; the first
    PINGREQ is due a second after each admission)."""
    rc, s, out = mqtts_swarm(
        hub,
        tmp_path,
        cache,
        "--shape",
        "steady",
        "--rate",
        "50",
        "-t",
        "4",
        "--devices",
        "10",
        "--passes",
        "1",
        "--hold",
        "10",
        "--mqtt-keepalive",
        "1",
    )
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] == 10 and a["held"] == 10 and "hold_dropped" not in a, a
    assert s["devices"]["distinct_admitted"] == 10 and s["devices"]["duplicates_within_a_pass"] == 0
    assert s["locust"]["MQTTS ping"]["requests"] >= 20 and s["locust"]["MQTTS ping"]["failures"] == 0


def test_held_connections_send_keepalives(hub, cache, tmp_path):
    rc, s, out = mqtts_swarm(
        hub,
        tmp_path,
        cache,
        "-u",
        "1",
        "-r",
        "100",
        "-t",
        "6",
        "--devices",
        "10",
        "--hold",
        "2.5",
        "--mqtt-keepalive",
        "1",
    )
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] >= 10 and a["held"] == a["admitted"] and "hold_dropped" not in a, a
    assert s["locust"]["MQTTS ping"]["requests"] >= 10 and s["locust"]["MQTTS ping"]["failures"] == 0


def test_foreign_fleet_is_refused_by_the_hub(hub, cache, tmp_path):
    """A fleet whose CA was never registered (no --hub-url: the swarm registers nothing)."""
    rc, s, _out = swarm(
        None,
        tmp_path,
        cache,
        "--tls-ca",
        hub.tls_ca,
        "--devices",
        "5",
        "--seed",
        "another-company",
        "--passes",
        "1",
        "-u",
        "1",
        "-r",
        "10",
        "-t",
        "20",
        host=hub.mqtts_url,
    )
    a = s["authentications"]
    assert rc == 1 and a["admitted"] == 0 and a["failures_by_code"] == {"connack:connack_5": 5}, a


@pytest.mark.parametrize(
    "args,message",
    [
        (["--source-addresses", "0"], "--source-addresses: must be an integer from 1 to 254"),
        (["--tls-ca", "/nonexistent/ca.pem"], "--tls-ca: no such file"),
        (["--mqtt-username", "{tenant}/{device_id}"], "--mqtt-username: only {device_id} and {hub}"),
        (["--hold", "-1"], "--hold: must be a number of at least 0"),
    ],
)
def test_bad_transport_options_are_named(args, message, cache, tmp_path):
    cmd = [
        LOCUST,
        "-f",
        "loadgen",
        "--headless",
        "--host",
        "mqtts://127.0.0.1:1",
        "--devices",
        "5",
        "--fleet-cache",
        str(cache),
        "--results-dir",
        str(tmp_path),
        "-t",
        "5",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "shape,args",
    [
        ("steady", ["--rate", "40", "-t", "3"]),
        ("churn", ["--churn-stay", "0.5", "--churn-away", "0.5", "--slots", "4", "-t", "3", "--resume"]),
    ],
)
def test_paced_and_churn_shapes_run_over_mqtts(hub, cache, tmp_path, shape, args):
    rc, s, out = mqtts_swarm(hub, tmp_path, cache, "--shape", shape, *args)
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] > 0 and a["failed_attempts"] == 0, a
    if shape == "churn":
        assert a["reconnects"] > 0 and a["resumed_offers"] > 0, a
