"""The report from a synthetic run directory: every section, valid plots, the figures in summary.json."""

import json

import pytest
from test_analysis import timeline

from bench.capacity.report import SECTIONS, build_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    raw = tmp_path / "run-1" / "raw"
    raw.mkdir(parents=True)
    rows = timeline([500, 1000, 1500], workers=1, ceiling=1200, hub_us=500)
    t0 = rows[-1]["t"]
    more = timeline([1000, 2000, 3000], workers=2, ceiling=2200, hub_us=520)
    for r in more:
        r["t"] += t0
    rows += more
    (raw / "timeline.json").write_text(json.dumps(rows))
    (raw / "config.json").write_text(json.dumps({"slo_p99_ms": 100, "hub_cores": {"1": 1, "2": 2},
                                                 "projection": {"devices": 2_000_000, "window_s": 600}}))
    (raw / "floor.json").write_text(json.dumps({"verify_us": 80.0}))
    (raw / "phases.json").write_text(json.dumps({"sign": {"p50": 35, "p90": 40, "p99": 60, "p999": 90}}))
    return tmp_path / "run-1"


def test_report_has_every_section_plot_and_figure(run_dir):
    summary = build_report(run_dir)
    page = (run_dir / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    for name in ("timeline", "latency", "scaling"):
        png = run_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG
        assert "data:image/png;base64," in page
    data = json.loads((run_dir / "summary.json").read_text())
    assert data["knee"]["workers"] == 2 and round(data["knee"]["achieved"]) == 2000
    assert data["hub_us_per_auth"] == pytest.approx(520)
    assert data["floor_multiple"] == pytest.approx(520 / 160)
    assert data["scaling"]["predicted_from_fewer"]["workers"] == 2
    assert data["projection"]["cores"] is not None
    assert "Limited by" in summary["first_line"]
    assert (run_dir / "report.md").read_text().count("## ") == len(SECTIONS)


def test_storm_section_compares_simulation_with_measurement(run_dir):
    # 3,000 devices against 1,000 admissions/s: about three seconds whatever the backoff
    curve = [[t / 10, min(3000, 100 * t)] for t in range(0, 41)]
    (run_dir / "raw" / "storm.json").write_text(json.dumps(
        {"devices": 3000, "capacity": 1000, "backoff": "aws-crt", "curve": curve, "retries": 5000}))
    summary = build_report(run_dir)
    storm = summary["storm"]
    assert storm["measured_time_to_admit"] == pytest.approx(3.0)
    assert storm["predicted"]["time_to_admit"] > 0 and storm["error"] is not None
    assert (run_dir / "plots" / "storm.png").read_bytes()[:8] == PNG
    assert "Storm time-to-admit: simulated" in (run_dir / "report.md").read_text()
