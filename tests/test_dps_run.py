"""``certstorm run --dps --hubs 2``: DPS and two hubs started, a storm and a re-provisioning storm
through DPS, the knees of provisioning and of connecting, the spread over the hubs, Azure's throttles
quoted with their source, the storm measured beside simulated -- in summary.json and report.md. The knee
rule and the report's text are checked on synthetic figures without processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from certstorm.capacity.dps import AZURE_DPS_LIMITS, knee, report
from loadgen import spread


def _phase(target: float, achieved: float, p99_ms: float, failed: float = 0, seconds: int = 5) -> dict:
    return {
        "seconds": seconds,
        "target_rate": target,
        "achieved_rate": achieved,
        "failed_rate": failed,
        "auth_p99_us": p99_ms * 1000,
    }


def test_the_knee_is_the_fastest_step_that_held():
    steps = [
        _phase(50, 50, 100),
        _phase(100, 99, 200),
        _phase(150, 120, 200),  # < 90% of target, 8 standard deviations of 750 arrivals short
        _phase(200, 199, 900),  # p99 over the SLO
        _phase(250, 249, 100, failed=5),  # failures
    ]
    assert knee(steps, slo_ms=500)["achieved_rate"] == 99
    assert knee(steps[2:4], slo_ms=500) is None
    # one second at 30/s that admitted 26 is the arrivals' draw (30 ± 5.5), not a step that fell behind
    assert knee([_phase(30, 26, 100, seconds=1)], slo_ms=500)["achieved_rate"] == 26
    assert knee([_phase(30, 18, 100, seconds=1)], slo_ms=500) is None


def test_fairness_of_a_spread():
    assert spread({"a": 10, "b": 10})["jain_index"] == 1.0
    lopsided = spread({"a": 30, "b": 0, "c": 0})
    assert lopsided["jain_index"] == round(1 / 3, 4) and lopsided["max_over_mean"] == 3.0
    assert spread({})["jain_index"] is None


def test_the_report_answers_first_and_cites_azure():
    summary = {
        "run_id": "r",
        "hubs": 2,
        "allocation": "evenly",
        "provisioning": {"knee_per_s": 100.0, "knee_p99_ms": 250.0, "service_cpu_us_per_device": 4000, "steps": []},
        "connecting": {"knee_per_s": None, "failures_by_code": {}, "steps": []},
        "spread": spread({"hub-1": 5, "hub-2": 5}),
        "storm": {
            "devices": 300,
            "backoff": "azure-c",
            "admitted": 300,
            "capacity_per_s": 100.0,
            "measured": {"50pct_s": 1.9, "90pct_s": 3.2, "99pct_s": 3.4, "100pct_s": 3.4},
            "simulated": {"50pct_s": 1.0, "90pct_s": 3.1, "99pct_s": 3.1, "100pct_s": 3.1},
        },
    }
    text = report(summary)
    assert "**100 registrations/s**" in text and "6.0 DPS unit(s)" in text
    assert "Connecting knee (one hub, mTLS + CONNECT): no step held" in text
    assert "| 100% | 3.4 | 3.1 | - |" in text and "Jain's fairness index 1.0" in text
    assert "learn.microsoft.com/azure/iot-dps/about-iot-dps#quotas-and-limits" in text
    assert f"{AZURE_DPS_LIMITS['device_registrations_per_min']:,}/min/service" in text


@pytest.mark.slow
def test_a_run_through_dps_with_two_hubs_writes_its_report(tmp_path):
    small = ["--dps-devices", "3000", "--storm-devices", "200", "--dps-steps", "3", "--step-seconds", "3"]
    done = subprocess.run(
        [sys.executable, "-m", "certstorm", "run", "--dps", "--hubs", "2", *small, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "latest-dps"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["storm"]["admitted"] == 200 and summary["reprovisioning_storm"]["admitted"] == 200
    assert summary["storm"]["provisioning"]["substatus"] == {"initialAssignment": 200}
    assert summary["reprovisioning_storm"]["provisioning"]["substatus"] == {"unchanged": 200}
    assert summary["provisioning"]["admitted"] > 0 and summary["connecting"]["admitted"] > 0
    shares = summary["spread"]["hubs"]
    assert set(shares) == {"hub-1", "hub-2"} and summary["spread"]["jain_index"] > 0.99, shares
    assert summary["azure_dps_limits"]["per_unit"]["device_registrations_per_min"] == 1000
    text = (run / "report.md").read_text()
    assert "Provisioning knee" in text and "The storm through DPS" in text and "Azure's documented DPS" in text
    assert not list(run.glob("raw/*.guard")), "the replay guards are removed"
