"""A short 'certstorm run' end to end: real hub, real Locust swarm, the report with every section."""

import json
import subprocess
import sys

from bench.capacity.report import SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"


def test_short_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--devices", "1500", "--workers", "1", "--steps", "2",
         "--step-seconds", "5", "--start-rate", "100", "--step-rate", "100", "--storm-devices", "300",
         "--storm-quota", "150", "--storm-timeout", "40", "--out", str(out)],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = out / "latest"
    page = (run / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    for name in ("timeline", "latency", "storm", "scaling"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == PNG, name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["knee"] and summary["knee"]["achieved"] > 0
    assert summary["hub_us_per_auth"] > 0 and summary["floor_us"] > 0 and summary["floor_multiple"] > 0
    assert summary["limit"] in ("hub", "generator", "neither")
    assert summary["storm"]["measured_time_to_admit"] > 0 and summary["storm"]["predicted"]
    assert summary["projection"]["cores"] >= 1
    assert summary["first_line"] == page.split("<strong>")[1].split("</strong>")[0]
    assert not (run / "fleet").exists()


def test_short_run_over_mqtts_says_so(tmp_path):
    """The same job with devices over MQTT with mutual TLS: the hub's TLS listener, the swarm's mqtts
    transport, and a report whose first line says which transport it measured."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--transport", "mqtts", "--devices", "600", "--workers", "1",
         "--steps", "1", "--step-seconds", "4", "--start-rate", "80", "--storm-devices", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "latest" / "summary.json").read_text())
    assert summary["transport"] == "mqtts" and summary["first_line"].endswith("devices over MQTT with mutual TLS")
    assert summary["hub_us_per_auth"] > 0 and summary["knee"] and summary["knee"]["achieved"] > 0
