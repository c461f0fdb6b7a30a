"""A short 'certstorm run' end to end against the hub it starts (real hub, real Locust swarm following the
search's schedule, the report in a real browser), and the thresholds a run can be gated on."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from browser import render, visible_problems
from test_report import SCHEMA, strict_load

from certstorm.capacity import analysis
from certstorm.capacity.sections import SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"
RUN = [sys.executable, "-m", "certstorm", "run"]


def assert_knee_and_cost(summary: dict) -> None:
    """The knee is a step that held (it admitted what it was asked for), and the target's CPU per
    authentication there is no less than the two-verify floor measured in the same run."""
    knee, cost = summary["knee"], summary["cost"]
    assert knee and not analysis.behind(knee["achieved"], knee["target"], knee["seconds"]), knee
    assert cost["target_us_per_auth"] >= cost["floor_us"] and cost["floor_multiple"] >= 1, cost


def assert_whole_second_windows(run: Path, summary: dict) -> None:
    """Every step is the whole seconds between two entries of the schedule, and nothing after the stop."""
    for v in summary["per_segment"]:
        schedule = json.loads((run / "raw" / f"{v['segment']}-schedule.json").read_text())
        starts = {e["at"] - summary["config"]["origin"]: e for e in schedule}
        stop = schedule[-1]["at"] - summary["config"]["origin"]
        assert schedule[-1].get("stop")
        for s in (s for s in summary["steps"] if s["segment"] == v["segment"]):
            assert s["start"] in starts and s["end"] <= stop and s["seconds"] == s["end"] - s["start"], s
        assert v["in_windows_s"] == sum(s["seconds"] for s in summary["steps"] if s["segment"] == v["segment"])
    assert summary["time"]["outside_share"] <= 0.10, summary["time"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A run that must find a knee even while the rest of the suite fills both cores: a low first step and
    a lenient objective, so its first step holds and the search still breaks higher up."""
    out = tmp_path_factory.mktemp("results")
    args = [
        "--devices",
        "20000",
        "--workers",
        "1",
        "--search-seconds",
        "18",
        "--step-seconds",
        "3",
        "--start-rate",
        "100",
        "--step-rate",
        "900",
        "--slo-ms",
        "1000",
        "--ceiling-seconds",
        "3",
        "--storm-devices",
        "300",
        "--storm-quota",
        "150",
        "--storm-timeout",
        "30",
        "--require",
        "knee>=1000000/s",
        "--require",
        "p99<=60000ms",
    ]
    proc = subprocess.run([*RUN, *args, "--out", str(out)], capture_output=True, text=True, timeout=240)
    return proc, out / "latest"


def test_a_requirement_that_cannot_hold_fails_the_run_and_is_named(short_run):
    proc, _ = short_run
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "requirement not met: knee>=1000000/s: measured" in proc.stdout
    assert "p99<=60000ms" not in proc.stdout.split("requirement not met")[-1]


def test_the_verdict_follows_the_measured_cpu(short_run):
    _, run = short_run
    summary = strict_load((run / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    [w1] = summary["per_segment"]
    broke = w1["broke"]
    if broke is None:  # every step held within the time bound: the verdict says so and what to change
        assert summary["limit"] == "not-found" and summary["first_line"].startswith("KNEE NOT FOUND"), summary
        assert "--search-seconds" in summary["first_line"]
    elif max(broke["target_cpu"], broke["gen_cpu"]) >= analysis.CPU_LIMIT:
        assert summary["limit"] == ("target" if broke["target_cpu"] >= broke["gen_cpu"] else "generator")
        assert summary["first_line"].startswith("HUB-LIMITED" if summary["limit"] == "target" else "GENERATOR")
    else:  # a busy machine can stall both: the report must then say neither, never blame a side
        assert summary["limit"] == "neither" and summary["first_line"].startswith("NEITHER SIDE SATURATED")
    assert_knee_and_cost(summary)
    assert summary["knee"]["p99"] is not None and summary["slo_p99_ms"] == 1000  # the objective the run was given
    assert broke is None or summary["knee"]["achieved"] < broke["target"]  # the knee lies below the break
    ceiling = w1["ceiling"]
    assert ceiling and ceiling["stage"] == "ceiling" and ceiling["target"] is None and ceiling["achieved"] > 0


def test_steps_are_whole_seconds_of_steady_load(short_run):
    _, run = short_run
    summary = strict_load((run / "summary.json").read_text())
    assert_whole_second_windows(run, summary)
    for s in summary["steps"]:
        assert s["workers_missing"] == [] and s["seconds"] >= 1
        assert min(s["achieved"], s["gen_cpu"], s["target_cpu"], s["machine_cpu"]) >= 0, s


def test_the_report_is_complete_and_reads_well_in_a_browser(short_run):
    _, run = short_run
    page = (run / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    for name in ("timeline", "latency", "storm"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == PNG, name
    seen = render(run / "report.html")
    assert visible_problems(seen) == []
    assert len(seen["images"]) == 3


def test_the_storm_ran_until_done_and_the_folder_is_small(short_run):
    _, run = short_run
    storm = json.loads((run / "summary.json").read_text())["storm"]
    assert storm["finished"] and storm["admitted"] == 300
    assert [m["measured_s"] is not None for m in storm["milestones"]] == [True] * 4
    assert not (run / "fleet").exists() and not list(run.glob("*.guard*"))
    size = sum(p.stat().st_size for p in Path(run).resolve().rglob("*") if p.is_file())
    assert size < 10 * 2**20, size


@pytest.mark.slow
def test_short_run_over_mqtts_says_so(tmp_path):
    """The same job with devices over MQTT with mutual TLS: the hub's TLS listener, the swarm's mqtts
    transport, and a report whose first line says which transport it measured."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            *RUN,
            "--transport",
            "mqtts",
            "--devices",
            "3000",
            "--workers",
            "1",
            "--search-seconds",
            "45",
            "--step-seconds",
            "4",
            "--start-rate",
            "80",
            "--step-rate",
            "80",
            "--storm-devices",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = strict_load((out / "latest" / "summary.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    assert summary["transport"] == "mqtts" and summary["first_line"].endswith("Devices over MQTT with mutual TLS.")
    assert_knee_and_cost(summary)
    assert_whole_second_windows(out / "latest", summary)
