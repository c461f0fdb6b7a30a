"""certstorm run against systems it did not start, and with generators beyond one process: Mosquitto as
the target (started here with the fleet's ca.pem as its cafile), a target that refuses every device, two
local swarm workers through a master, a worker of another certstorm version, and a worker lost mid-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jsonschema
import psutil
import pytest
from test_mosquitto import require_mosquitto
from test_report import SCHEMA, strict_load
from test_run import RUN, assert_whole_second_windows

from bench.broker import Mosquitto
from devicekit.fleet import Fleet, generate_fleet
from devicekit.pki import SupplyChain

SHORT = ["--search-seconds", "24", "--step-seconds", "3", "--ceiling-seconds", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet") / "fleet"
    generate_fleet(path, 6000, progress=False)
    return path


@pytest.mark.slow
def test_mosquitto_as_the_target_gets_a_full_report_with_a_knee_and_its_cpu_per_connection(tmp_path, fleet_dir):
    require_mosquitto()
    with Fleet.open(fleet_dir) as fleet, Mosquitto(tmp_path / "broker", fleet.ca_certificate) as broker:
        assert (fleet_dir / "ca.pem").read_bytes() == broker.cafile.read_bytes()
        out = tmp_path / "results"
        proc = subprocess.run(
            [
                *RUN,
                "--target",
                broker.url,
                "--target-pid",
                str(broker.pid),
                "--fleet",
                str(fleet_dir),
                "--tls-ca",
                str(broker.server_ca),
                "--start-rate",
                "60",
                "--step-rate",
                "120",
                *SHORT,
                "--storm-devices",
                "200",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = strict_load((out / "latest" / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    assert summary["target"]["url"] == broker.url and summary["target"]["cost_known"]
    assert broker.url in summary["first_line"] and summary["first_line"].endswith("Devices over MQTT with mutual TLS.")
    assert summary["knee"] is not None and summary["cost"]["target_us_per_auth"] > 0
    assert "mosquitto" in summary["target"]["cpu"]
    assert_whole_second_windows(out / "latest", summary)
    page = (out / "latest" / "report.html").read_text()
    assert broker.url in page and "Measured: " in page
    assert summary["storm"] and summary["storm"]["admitted"] == 200


@pytest.mark.slow
def test_a_target_that_refuses_every_device_stops_after_the_first_step_with_the_codes(tmp_path, fleet_dir):
    require_mosquitto()
    stranger = SupplyChain.build(1, "p256").company.certificate  # the broker trusts another company
    with Mosquitto(tmp_path / "broker", stranger) as broker:
        out = tmp_path / "results"
        proc = subprocess.run(
            [
                *RUN,
                "--target",
                broker.url,
                "--target-pid",
                str(broker.pid),
                "--fleet",
                str(fleet_dir),
                "--tls-ca",
                str(broker.server_ca),
                "--start-rate",
                "50",
                *SHORT,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("certstorm run: error: the target refused every authentication of the first step (")
    assert "×" in last
    summary = strict_load((out / "latest" / "summary.json").read_text())
    assert len(summary["steps"]) == 1 and summary["steps"][0]["achieved"] == 0 and summary["storm"] is None


def test_an_mqtts_target_without_a_fleet_it_trusts_is_refused_before_anything_is_made(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"mqtts://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.run(
            [*RUN, "--target", url, "--out", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 2 and "argument --fleet: a broker admits devices by the CA it trusts" in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_two_local_workers_drive_a_run_through_the_master(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            *RUN,
            "--devices",
            "20000",
            "--workers",
            "1",
            "--swarm-processes",
            "2",
            "--start-rate",
            "300",
            "--step-rate",
            "600",
            *SHORT,
            "--storm-devices",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = strict_load((out / "latest" / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    [segment] = summary["per_segment"]
    assert sorted(segment["generators"]) == ["0", "1"] and segment["workers_lost"] == {}
    for s in summary["steps"]:
        assert sorted(s["gen_cpu_by_worker"]) == ["0", "1"] and s["workers_missing"] == [], s
        assert s["gen_cpu"] == max(s["gen_cpu_by_worker"].values())
    assert_whole_second_windows(out / "latest", summary)
    # the workers were started bare: the fleet and the target came from the master's plan
    logs = list((out / "latest" / "raw").glob("w1-worker-*.log.gz"))
    assert len(logs) == 2


def _wait_for(path, what, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and any(
            json.loads(line).get("kind") == what for line in path.read_text().splitlines() if line.strip()
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what!r} record in {path} within {timeout} s")


@pytest.mark.slow  # a whole run's start: hub, fleet, floor and a master waiting for its worker
def test_a_worker_of_another_certstorm_version_is_refused_naming_both(tmp_path):
    port = _free_port()
    out = tmp_path / "results"
    run = subprocess.Popen(
        [
            *RUN,
            "--devices",
            "2000",
            "--workers",
            "1",
            "--swarm-workers",
            "1",
            "--swarm-port",
            str(port),
            "--swarm-wait",
            "60",
            "--storm-devices",
            "0",
            *SHORT,
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the master listens once the fleet is made
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        code = (
            "import importlib.metadata as m, sys; real = m.version\n"
            "m.version = lambda name: '9.9.9' if name == 'certstorm' else real(name)\n"
            "from certstorm.cli import main\n"
            f"sys.exit(main(['swarm', '--worker', '--master-host', '127.0.0.1', '--master-port', '{port}']))"
        )
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stdout, stderr = run.communicate(timeout=120)
    finally:
        for proc in (run, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert run.returncode == 2, stdout[-3000:] + stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert "runs certstorm 9.9.9, this master" in last and "install the same version on every generator host" in last


@pytest.mark.slow
def test_a_worker_lost_mid_run_is_named_and_the_steps_after_it_judged_without_it(tmp_path):
    out = tmp_path / "results"
    run = subprocess.Popen(
        [
            *RUN,
            "--devices",
            "20000",
            "--workers",
            "1",
            "--swarm-processes",
            "2",
            "--start-rate",
            "200",
            "--step-rate",
            "200",
            "--search-seconds",
            "30",
            "--step-seconds",
            "3",
            "--ceiling-seconds",
            "3",
            "--storm-devices",
            "0",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        [live] = _find(out, "w1-live.jsonl", 90)
        _wait_for(live, "second")
        time.sleep(6)
        victims = [
            p for p in psutil.Process(run.pid).children(recursive=True) if "--worker" in p.cmdline() and p.is_running()
        ]
        assert len(victims) == 2
        os.kill(victims[-1].pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    summary = strict_load((out / "latest" / "summary.json").read_text())
    assert any("was lost" in note for note in summary["notes"]), output[-3000:]
    [segment] = summary["per_segment"]
    [(lost, at)] = segment["workers_lost"].items()
    after = [s for s in summary["steps"] if s["start"] >= at + 3]
    assert after and all(int(lost) in s["workers_missing"] for s in after)


def _find(out, name, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(out.glob(f"*/raw/{name}"))
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {name} under {out}")
