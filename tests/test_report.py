"""The report from a synthetic run directory: every section, valid plots, strict JSON that validates against
docs/summary.schema.json, and the page as headless Chromium shows it."""

import json
from pathlib import Path

import jsonschema
import pytest
from browser import render, visible_problems
from test_analysis import ramp

from certstorm.capacity.report import build_report
from certstorm.capacity.sections import SECTIONS

PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "summary.schema.json").read_text())


def strict_load(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def timeline(steps, segment):
    rows = []
    for s in steps:
        for i in range(4):
            rows.append(
                {
                    "t": s["start"] + i,
                    "wall": 1e9 + s["start"] + i,
                    "segment": segment,
                    "workers": s["workers"],
                    "ok_rate": s["achieved"],
                    "error_rate": 0.0,
                    "hub_cpu": s["hub_cpu"],
                    "gen_cpu": s["gen_cpu"],
                    "machine_cpu": 0.6,
                }
            )
    return rows


def write_run(tmp_path, *, hub_us, gen_us, storm=True, workers=(1,)):
    run = tmp_path / "run-1"
    raw = run / "raw"
    raw.mkdir(parents=True)
    steps, samples, searches = [], [], []
    for w in workers:
        ws = ramp(hub_us=hub_us / w, gen_us=gen_us, ceiling=2200 * w, workers=w, levels=(500, 1000, 1500, 2000, 2500))
        steps += ws
        samples += timeline(ws, f"w{w}")
        searches.append({"workers": w, "seconds": 30.0, "bound_s": 80.0})
    (raw / "steps.json").write_text(json.dumps(steps))
    (raw / "timeline.json").write_text(json.dumps(samples))
    (raw / "search.json").write_text(json.dumps(searches))
    (raw / "errors.json").write_text(json.dumps({"1 worker(s), ramp": {"proof:timeout": 3}}))
    (raw / "config.json").write_text(
        json.dumps(
            {
                "slo_p99_ms": 100,
                "hub_cores": {str(w): w for w in workers},
                "machine_cores": 2,
                "shared_cores": True,
                "projection": {"devices": 2_000_000, "window_s": 600},
            }
        )
    )
    (raw / "floor.json").write_text(json.dumps({"verify_us": 80.0}))
    if storm:
        # 3,000 devices against 1,000 admissions/s; the curve stops at 2,900: one device short
        curve = [[t / 10, min(2900, 100 * t)] for t in range(1, 41)]
        (raw / "storm.json").write_text(
            json.dumps(
                {
                    "devices": 3000,
                    "capacity": 1000,
                    "backoff": "aws-crt",
                    "curve": curve,
                    "retries": 5000,
                    "attempt_rate": 1500,
                    "bound_s": 20,
                    "failures_by_code": {"challenge:throttled": 5000},
                }
            )
        )
    return run


def test_report_has_every_section_plot_and_a_strict_schema_valid_summary(tmp_path):
    run = write_run(tmp_path, hub_us=400, gen_us=200)
    summary = build_report(run)
    page = (run / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    assert "<ul><li>" in page and "<li>" not in page.replace("<ul><li>", "").split("</ul>")[-1]
    for name in ("timeline", "latency", "storm"):
        assert (run / "plots" / f"{name}.png").read_bytes()[:8] == PNG, name
    data = strict_load((run / "summary.json").read_text())
    jsonschema.validate(data, SCHEMA)
    assert data == summary
    assert data["limit"] == "hub" and data["first_line"].startswith("HUB-LIMITED: knee at 2,000")
    # shared cores are said on the first screen, before the first section
    assert data["notes"] == [
        "Hub and generator shared this machine's 2 core(s): hub CPU is read against the cores "
        "left beside the generator's 1."
    ]
    assert page.index("Hub and generator shared") < page.index("<h2")
    assert data["cost"]["hub_us_per_auth"] == pytest.approx(400)
    assert data["cost"]["floor_multiple"] == pytest.approx(400 / 160)
    assert data["scaling"]["usl"] is None and "--master" in data["scaling"]["note"]
    assert not (run / "plots" / "scaling.png").exists()  # no line drawn through too few points
    storm = data["storm"]
    assert (
        storm["admitted"] == 2900 and not storm["finished"] and storm["admitted_fraction"] == pytest.approx(2900 / 3000)
    )
    by = {m["fraction"]: m for m in storm["milestones"]}
    assert by[0.5]["measured_s"] == pytest.approx(1.5) and by[0.5]["simulated_s"] > 0
    assert by[1.0]["measured_s"] is None and "not reached" in by[1.0]["reason"]
    assert data["projection"]["cores"] == 2  # 3,333/s at 2,000/s per core
    assert (run / "report.md").read_text().count("\n## ") == len(SECTIONS)


def test_the_generator_limited_headline_says_by_how_much(tmp_path):
    run = write_run(tmp_path, hub_us=200, gen_us=400, storm=False)
    data = build_report(run)
    assert data["limit"] == "generator"
    # the generator broke at 2,500/s (100% of its core) with the hub at 50%: the hub would take ~4,250/s
    assert data["first_line"].startswith("GENERATOR-LIMITED: knee at 2,000") and "4,250/s" in data["first_line"]
    assert data["storm"] is None


def test_values_are_escaped(tmp_path):
    run = write_run(tmp_path, hub_us=400, gen_us=200, storm=False)
    (run / "raw" / "errors.json").write_text(json.dumps({"1 worker(s), ramp": {"<script>alert(1)</script>": 1}}))
    build_report(run)
    page = (run / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_in_headless_chromium(tmp_path):
    run = write_run(tmp_path, hub_us=400, gen_us=200)
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
