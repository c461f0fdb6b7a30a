"""docs/dps.md's walkthrough, run as written (its ```sh blocks between the e2e:dps markers) with openssl,
curl and mosquitto_pub against DPS and two hubs, each on a loopback address of its own with its MQTT
listener on port 8883, as device SDKs need. Skipped with an install hint where the tools are missing --
except in CI, where ``.ci/run`` installs them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_dps_sdk import free_loopback_addresses
from test_openssl_e2e import doc_blocks, run_shell

from certstorm.processes import DpsProcess, HubProcess

DOC = Path(__file__).resolve().parent.parent / "docs" / "dps.md"
TOOLS = {"openssl": "openssl", "curl": "curl", "mosquitto_pub": "mosquitto-clients"}


@pytest.fixture
def services(tmp_path):
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        hint = f"install {' '.join(missing)} (Debian/Ubuntu: apt-get install {' '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing in CI: {hint}")
        pytest.skip(hint)
    dps_address, a, b = free_loopback_addresses(3)
    state = tmp_path / "state"
    state.mkdir()
    hubs = [
        HubProcess(
            state / f"hub-{n}.db", workers=1, host=address, args=("--mqtts-port", "8883", "--admission", "provisioned")
        )
        for n, address in (("a", a), ("b", b))
    ]
    dps = DpsProcess(state / "dps.db", workers=2, host=dps_address, args=("--mqtts-port", "8883"))
    started = []
    try:
        for process in (*hubs, dps):
            started.append(process.start())
        yield dps, hubs
    finally:
        for process in started:
            try:
                assert process.stop() == 0, process.log()
            finally:
                process.kill()
        for process in started:
            assert " ERROR " not in process.log(), process.log()


def test_the_documented_dps_walkthrough_works_as_written(services, tmp_path):
    dps, (hub_a, hub_b) = services
    work = tmp_path / "work"
    work.mkdir()
    script = doc_blocks("dps", DOC)
    assert all(process.admin_token() not in script for process in (dps, hub_a, hub_b))
    out = run_shell(
        script,
        work,
        dps,
        DPS=dps.url,
        DPS_TOKEN_FILE=dps.admin_token_path,
        HUB_A=hub_a.bind,
        HUB_A_URL=hub_a.url,
        HUB_A_TOKEN_FILE=hub_a.admin_token_path,
        HUB_A_CA=hub_a.tls_ca,
        HUB_B=hub_b.bind,
        HUB_B_URL=hub_b.url,
        HUB_B_TOKEN_FILE=hub_b.admin_token_path,
        HUB_B_CA=hub_b.tls_ca,
    )
    assigned = json.loads((work / "assigned.json").read_text())
    state = assigned["registrationState"]
    assert assigned["status"] == "assigned" and state["deviceId"] == "dev-1"
    assert state["assignedHub"] in (hub_a.bind, hub_b.bind) and state["substatus"] == "initialAssignment"
    hub = hub_a if state["assignedHub"] == hub_a.bind else hub_b
    entry = hub.admin("GET", "/devices/dev-1").json()
    assert entry["provisioned"]["detail"]["group"] == "company-x" and entry["provisioned"]["source"].startswith("dps:")
    connected = (work / "connected.txt").read_text()
    assert "received CONNACK (0)" in connected and "received PUBACK" in connected
    assert "not authorised" in (work / "elsewhere.txt").read_text()  # the other hub: not assigned there
    assert json.loads((work / "refused.json").read_text())["error"] == "chain_untrusted"
    assert json.loads((work / "anonymous.json").read_text())["error"] == "admin_token_missing"
    assert "401" in out.splitlines()
    assert 'code="chain_untrusted",outcome="refused",step="challenge"' in out
    assert f'certstorm_dps_assignments_total{{hub="{state["assignedHub"]}",substatus="initialAssignment"}} 1.0' in out
