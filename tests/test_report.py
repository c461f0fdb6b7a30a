"""The report from synthetic run folders (tests/synthetic.py: the real search, windows and analysis over a
modelled target): every section, valid plots, strict JSON that validates against
docs/summary.schema.json, the headline for each limiting side, and the page as headless Chromium shows it."""

import json
from pathlib import Path

import jsonschema
import pytest
from browser import render, visible_problems
from synthetic import Model, write_run

from certstorm.capacity.report import build_report
from certstorm.capacity.search import SearchSettings
from certstorm.capacity.sections import SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "summary.schema.json").read_text())


def strict_load(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_report_has_every_section_plot_and_a_strict_schema_valid_summary(tmp_path):
    run = write_run(tmp_path / "run-1", Model(capacity=1800, target_us=450, fixed=0.05))
    summary = build_report(run)
    page = (run / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    for name in ("timeline", "latency", "storm"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == PNG, name
    data = strict_load((run / "summary.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data == summary
    assert data["limit"] == "target" and data["first_line"].startswith("HUB-LIMITED: knee at 1,")
    assert "closed-loop ceiling 1,800/s" in data["first_line"]
    [segment] = data["per_segment"]
    assert segment["knee_of_ceiling"] == pytest.approx(data["knee"]["achieved"] / 1800)
    # the slope comes back as the model's marginal cost, the average at the knee above it
    assert data["cost"]["slope"]["slope_us"] == pytest.approx(450, rel=0.01)
    assert data["cost"]["target_us_per_auth"] > 450
    tm = data["time"]
    assert tm["outside_share"] == 0 and tm["settle_s"] >= 1 and tm["search_s"] == tm["in_windows_s"] + tm["settle_s"]
    assert data["cost"]["floor_multiple"] == pytest.approx(data["cost"]["target_us_per_auth"] / 160)
    assert data["scaling"]["usl"] is None and "--workers 1,2,3" in data["scaling"]["note"]
    assert not (run / "plots" / "scaling.png").exists()  # no line drawn through too few points
    storm = data["storm"]
    assert storm["admitted"] == 2900 and not storm["finished"]
    assert storm["admitted_fraction"] == pytest.approx(2900 / 3000)
    by = {m["fraction"]: m for m in storm["milestones"]}
    assert by[0.5]["measured_s"] == pytest.approx(1.5) and by[0.5]["simulated_s"] > 0
    assert by[1.0]["measured_s"] is None and "not reached" in by[1.0]["reason"]
    # 3,333/s at 450 µs + 0.05 cores, each core 85% busy: 2 cores
    assert data["projection"]["cores"] == 2 and "slope" in data["projection"]["basis"]
    assert (run / "report.md").read_text().count("\n## ") == len(SECTIONS)


def test_the_generator_limited_headline_gives_the_targets_headroom_and_the_command_that_adds_generators(tmp_path):
    model = Model(capacity=4000, target_us=200, fixed=0.0, gen_us=500, gen_capacity=1900)
    run = write_run(
        tmp_path / "run-2",
        model,
        SearchSettings(slo_ms=100, ceiling_s=0),
        storm=False,
        target_url="mqtts://127.0.0.1:8883",
    )
    data = build_report(run)
    assert data["limit"] == "generator"
    line = data["first_line"]
    assert line.startswith("GENERATOR-LIMITED: knee at ") and "at mqtts://127.0.0.1:8883" in line
    assert "the target used" in line and "so it would take about" in line
    assert "Add generator capacity: certstorm run --devices 1000 --swarm-workers 1" in line
    assert "certstorm swarm --worker --master-host THIS-HOST --master-port 5557" in line
    assert data["storm"] is None


def test_a_target_whose_cpu_is_not_measured_is_judged_without_it_and_says_so(tmp_path):
    model = Model(capacity=1500, target_us=500, target_cores=None)
    run = write_run(tmp_path / "run-3", model, storm=False, target_url="mqtts://broker.example:8883")
    data = build_report(run)
    jsonschema.validate(data, SCHEMA)
    assert data["target"]["cost_known"] is False and data["cost"]["target_us_per_auth"] is None
    assert data["limit"] == "target" and "its CPU is not measured, so its cost is unknown" in data["first_line"]
    assert any("judged by p99, errors and the rate delivered only" in n for n in data["notes"])
    assert all(s["target_cpu"] is None for s in data["steps"])


def test_a_target_that_never_broke_says_which_target_and_what_to_change(tmp_path):
    model = Model(capacity=1_000_000, target_us=1, gen_us=1, gen_capacity=1_000_000)
    run = write_run(tmp_path / "run-5", model, storm=False, target_url="mqtts://broker.example:8883")
    data = build_report(run)
    jsonschema.validate(data, SCHEMA)
    line = data["first_line"]
    assert data["limit"] == "not-found" and line.startswith("KNEE NOT FOUND within the time bound at mqtts://"), line
    assert "--search-seconds" in line and data["knee"] is not None


def test_a_lost_generator_is_named(tmp_path):
    model = Model(capacity=1800, generators=2, lose={1: 12})
    run = write_run(tmp_path / "run-4", model, storm=False)
    data = build_report(run)
    assert any("Generator worker 1 was lost" in n for n in data["notes"])
    late = [s for s in data["steps"] if s["start"] >= 12 + 5]
    assert late and all(s["workers_missing"] == [1] for s in late)
    page = (run / "report.html").read_text()
    assert "Generator 1 was lost" in page


def test_values_are_escaped(tmp_path):
    run = write_run(tmp_path / "run-5", Model(), storm=False)
    (run / "raw" / "errors.json").write_text(json.dumps({"w1, knee search": {"<script>alert(1)</script>": 1}}))
    build_report(run)
    page = (run / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_in_headless_chromium(tmp_path):
    run = write_run(tmp_path / "run-6", Model(capacity=1800))
    build_report(run)
    seen = render(run / "report.html")
    assert len(seen["images"]) == 3 and "Reconnect storm" in seen["text"]
    assert visible_problems(seen) == []


def test_the_browser_check_catches_what_a_reader_should_not_see(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><p>knee at NaN/s</p><table><tr><td></td></tr></table>"
        "<img alt='gone' src='data:image/png;base64,AAAA'></body></html>"
    )
    problems = visible_problems(render(page))
    assert any("NaN" in p for p in problems) and any("empty figure" in p for p in problems)
    assert any("'gone' did not load" in p for p in problems)


def test_a_search_that_used_up_the_fleet_says_its_steps_measure_two_kinds_of_work(tmp_path):
    run = write_run(tmp_path / "run-6", Model(capacity=1800, fleet=8_000), storm=False)
    data = build_report(run)
    jsonschema.validate(data, SCHEMA)
    [note] = [n for n in data["notes"] if n.startswith("The fleet was used up")]
    shares = [s["reconnect_share"] for s in data["steps"] if s["stage"] != "ceiling"]
    assert min(shares) < 0.5 <= max(shares) and "--devices" in note, (shares, note)
    assert data["knee"]["reconnect_share"] < 0.5  # the knee is of first connections, as the first step was
    assert "not judged: reconnects" in (run / "report.html").read_text()
    # a fleet the search never used up: no such note
    whole = build_report(write_run(tmp_path / "run-7", Model(capacity=1800, fleet=10_000_000), storm=False))
    assert not any(n.startswith("The fleet was used up") for n in whole["notes"])
