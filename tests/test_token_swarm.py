"""The swarm drives a fleet whose device keys are in a token: refused before the run when its PIN file is
loose or when asked to connect over MQTT with mutual TLS (its TLS stack cannot use a token's key); over HTTP
every device signs its challenge in the token, and a key deleted during the run fails that device alone,
with its own code."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import serve_hub

from devicekit.hsm import DEFAULT_MODULE

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 12


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "token-swarm", workers=1)


@pytest.fixture(scope="module")
def fleet(softhsm, tmp_path_factory):
    tokens = {who: softhsm.token(who) for who in ("company", "factory", "technician", "device")}
    out = tmp_path_factory.mktemp("token-fleet") / "pki"
    args = ["pki", "chain", "--devices", str(DEVICES), "--out", str(out)]
    for who, (label, pin_file) in tokens.items():
        args += [f"--{who}-token", label, f"--{who}-pin-file", pin_file]
    proc = softhsm.certstorm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "fleet", tokens


def locust(softhsm, hub, fleet_dir: Path, results: Path, *args: str, host: str | None = None):
    cmd = [
        sys.executable, "-m", "certstorm", "swarm", "--headless", "--only-summary", "--host", host or hub.url,
        "--admin-token-file", hub.admin_token_path, "--fleet", str(fleet_dir), "--results-dir", str(results), *args,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**softhsm.env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_loose_pin_file_or_mqtts_is_refused_before_the_run(softhsm, hub, fleet, tmp_path):
    fleet_dir, tokens = fleet
    meta = json.loads((fleet_dir / "fleet.json").read_text())
    loose = tmp_path / "fleet"
    loose.mkdir()
    for name in ("ca.pem", "chain.pem", "requests.pem", "devices.pem"):
        (loose / name).write_bytes((fleet_dir / name).read_bytes())
    pin = Path(tokens["device"][1]).read_text().strip()
    meta["pkcs11"]["pin_file"] = softhsm.pin_file("loose-device", pin, mode=0o644)
    (loose / "fleet.json").write_text(json.dumps(meta))
    cases = [
        (loose, None, "chmod 600"),
        (fleet_dir, "mqtts://127.0.0.1:1", "cannot use a key that stays in a token"),
    ]
    for where, host, needle in cases:
        proc = locust(softhsm, hub, where, tmp_path / "r", "-u", "1", "-t", "5s", host=host)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2, out[-3000:]
        failed = [line for line in out.splitlines() if "swarm set-up failed" in line]
        assert len(failed) == 1 and needle in failed[0], out[-3000:]
        assert pin not in out and "Traceback" not in out
    assert not list((tmp_path / "r").glob("*/summary.json"))  # no run started


def test_devices_sign_in_the_token_and_a_key_lost_mid_run_fails_that_device_alone(softhsm, hub, fleet, tmp_path):
    fleet_dir, tokens = fleet
    live = tmp_path / "live.jsonl"
    proc = locust(
        softhsm, hub, fleet_dir, tmp_path / "r", "--shape", "steady", "--rate", "3", "--arrivals", "uniform",
        "--slots", "2", "--passes", "1", "-t", "25s", "--live-file", str(live), "--exit-code-on-error", "0",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (live.exists() and '"kind":"ready"' in live.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.1)
        # the last device, due about four seconds from now, loses its key in the token
        label, pin_file = tokens["device"]
        pin = Path(pin_file).read_text().strip()
        lost = f"hsm-device-{DEVICES - 1:06d}"
        softhsm.run(
            "pkcs11-tool", "--module", DEFAULT_MODULE, "--token-label", label, "--login", "--pin", pin,
            "--delete-object", "--type", "privkey", "--label", lost,
        )  # fmt: skip
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    summary = json.loads(sorted((tmp_path / "r").glob("*/summary.json"))[-1].read_text())
    a = summary["authentications"]
    assert a["failures_by_code"] == {"sign:key_missing": 1}, a
    assert a["admitted"] == DEVICES - 1 and summary["devices"]["distinct_admitted"] == DEVICES - 1, a
    assert summary["latency_us"]["sign"]["count"] == DEVICES - 1  # each signature the token's
    assert hub.admin("GET", f"/devices/{lost}").status == 404  # the hub never admitted it
    assert hub.admin("GET", f"/devices/hsm-device-{0:06d}").status == 200
