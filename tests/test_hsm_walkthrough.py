"""docs/hsm.md's walkthrough, run as written (its ```sh blocks between the e2e:hsm markers): tokens made with
softhsm2-util, the chain by certstorm pki, the fleet through the swarm over HTTP and one device over MQTT with
mutual TLS through mosquitto_pub and Debian's PKCS#11 engine, against a real hub with its TLS listener.
Skipped with an install hint where those tools are missing -- except in CI (CI=true), where ``.ci/run``
installs them."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import serve_hub
from test_openssl_e2e import doc_blocks, run_shell
from tokenkit import require_softhsm

DOC = Path(__file__).resolve().parent.parent / "docs" / "hsm.md"
TOOLS = {"openssl": "openssl", "mosquitto_pub": "mosquitto-clients", "softhsm2-util": "softhsm2"}
ENGINE = ("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so", "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    require_softhsm()
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if not any(os.path.exists(p) for p in ENGINE):
        missing.append("libengine-pkcs11-openssl")
    if missing:
        hint = f"install {' '.join(missing)} (Debian/Ubuntu: apt-get install {' '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing in CI: {hint}")
        pytest.skip(hint)
    yield from serve_hub(tmp_path_factory, "hsm-doc", workers=1, args=("--mqtts-port", "0"))


@pytest.mark.slow  # every key made in a software token, step by step: slow by nature
def test_the_documented_hsm_walkthrough_works_as_written(hub, tmp_path):
    script = doc_blocks("hsm", DOC)
    assert all("softhsm2-util" in line for line in script.splitlines() if "--pin " in line)  # certstorm: files only
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin"
    out = run_shell(script, tmp_path, hub, MQTTS_PORT=str(hub.mqtts_port), HUB_CA=hub.tls_ca, PATH=path)
    assert "Company-X: made in the token yes, sensitive yes, extractable no, never extractable yes" in out
    assert "technician-z.pem: OK" in out
    assert "wrong PIN for token 'company-x'" in (tmp_path / "refused-pin.txt").read_text()
    assert "holds no private key labelled 'Company-X'" in (tmp_path / "refused-key.txt").read_text()
    connected = (tmp_path / "connected.txt").read_text()
    assert "received CONNACK (0)" in connected and "received PUBACK" in connected
    assert "20 private key(s) in token 'devices'" in out
    summary = json.loads(sorted((tmp_path / "swarm-results").glob("*/summary.json"))[-1].read_text())
    assert summary["authentications"]["admitted"] == 20 and summary["devices"]["distinct_admitted"] == 20
    assert summary["authentications"]["failures_by_code"] == {}
    entry = hub.admin("GET", "/devices/hsm-device-000000").json()
    assert entry["authentications"] == 2  # once over HTTP by the swarm, once over MQTT by mosquitto_pub
    for pin in (tmp_path / name for name in ("company-x.pin", "devices.pin")):
        assert pin.stat().st_mode & 0o077 == 0
        assert pin.read_text() not in out
