"""docs/tls.md's walkthrough, run as written (its ```sh blocks between the e2e:tls markers) with openssl,
curl and mosquitto_pub against a real hub with its TLS listener. Skipped with an install hint where those
tools are missing -- except in CI (CI=true), where ``.ci/run`` installs them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import serve_hub
from test_openssl_e2e import doc_blocks, run_shell

DOC = Path(__file__).resolve().parent.parent / "docs" / "tls.md"
TOOLS = {"openssl": "openssl", "curl": "curl", "mosquitto_pub": "mosquitto-clients"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        hint = f"install {' '.join(missing)} (Debian/Ubuntu: apt-get install {' '.join(missing)})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing in CI: {hint}")
        pytest.skip(hint)
    yield from serve_hub(tmp_path_factory, "tls-doc", args=("--mqtts-port", "0"))


def test_the_documented_tls_walkthrough_works_as_written(hub, tmp_path):
    out = run_shell(doc_blocks("tls", DOC), tmp_path, hub, MQTTS_PORT=str(hub.mqtts_port), HUB_CA=hub.tls_ca)
    connected = (tmp_path / "connected.txt").read_text()
    assert "received CONNACK (0)" in connected and "received PUBACK" in connected
    assert "Verification: OK" in (tmp_path / "handshake.txt").read_text()
    for refusal in ("refused-id.txt", "refused-disabled.txt"):
        assert "not authorised" in (tmp_path / refusal).read_text(), refusal
    entry = json.loads(hub.call("GET", "/devices/dev-1", token=hub.admin_token()).body)
    assert entry["authentications"] == 1 and entry["disabled"] is True
    assert 'code="device_id_mismatch",outcome="refused",step="mqtts"' in out
    assert 'code="device_disabled",outcome="refused",step="mqtts"' in out
