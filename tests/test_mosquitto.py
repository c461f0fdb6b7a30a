"""Mosquitto as the yardstick: the swarm admits a fleet through a real broker that checks client
certificates (``require_certificate true``, Company-X's root as ``cafile``, ``use_identity_as_username``),
and the broker refuses a device from a foreign root. Skipped with an install hint where Mosquitto is
missing -- except in CI (CI=true), where its absence is a failure: ``.ci/run`` installs it."""

from __future__ import annotations

import os
import time

import pytest
from test_swarm import swarm

from bench.broker import INSTALL_HINT, Mosquitto, mosquitto_binary
from devicekit.fleet import derive_fleet
from devicekit.mqtts import MqttsClient, MqttsFailure, MqttsTarget
from devicekit.pki import SupplyChain

DEVICES = 80


def require_mosquitto() -> None:
    if mosquitto_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mosquitto is missing in CI: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module")
def fleet(cache):
    return derive_fleet(DEVICES, cache_dir=str(cache))  # the swarm derives the same seeded fleet


@pytest.fixture(scope="module")
def broker(tmp_path_factory, fleet):
    require_mosquitto()
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), fleet.ca_certificate) as running:
        yield running


def test_the_swarm_admits_a_fleet_through_mosquitto(broker, cache, tmp_path):
    rc, s, out = swarm(
        None,
        tmp_path,
        cache,
        "--tls-ca",
        broker.server_ca,
        "--devices",
        str(DEVICES),
        "--passes",
        "1",
        "-u",
        "8",
        "-r",
        "100",
        "-t",
        "60",
        host=broker.url,
    )
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] == DEVICES and a["failed_attempts"] == 0 and not a["failures_by_code"], a
    assert s["devices"]["distinct_admitted"] == DEVICES
    assert s["hub"]["ca"]["id"] is None  # nothing registered: the broker trusts Company-X by its cafile
    assert s["latency_us"]["tls_handshake"]["count"] == DEVICES


def test_mosquitto_refuses_a_device_from_a_foreign_root(broker, fleet):
    client = MqttsClient(MqttsTarget.from_url(broker.url, ca_file=broker.server_ca))
    foreign = SupplyChain.build(2).device("device-000001")  # same id, another company's root
    with pytest.raises(MqttsFailure) as caught:
        client.connect(foreign.device_id, foreign.chain_der(), foreign.private_key).close()
    assert caught.value.code in ("tls_handshake_failed", "closed_by_server", "connection_reset"), caught.value
    # refused for its chain, not for anything else (the broker writes its log after it closed the connection)
    deadline = time.monotonic() + 10
    while "certificate verify failed" not in broker.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "certificate verify failed" in broker.output()
    # ... while the fleet's own device is admitted by the same broker
    own = fleet.identity(1)
    client.connect(own.device_id, own.chain_der(), own.private_key).close()
