"""The regression gate: refuses a slowdown beyond the threshold, passes within it."""

import json

from bench import compare


def _file(tmp_path, name, costs):
    data = {"benchmarks": [{"fullname": f"bench/b.py::{k}", "extra_info": {"verifies_min": v}} for k, v in costs.items()]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_regression_beyond_threshold_fails(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0, "cold": 8.0})
    cur = _file(tmp_path, "cur.json", {"warm": 2.4, "cold": 8.0})
    assert compare.main([base, cur, "--threshold", "0.15"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "+20.0%" in out


def test_within_threshold_passes_and_reports_new_and_missing(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0, "gone": 1.0})
    cur = _file(tmp_path, "cur.json", {"warm": 2.2, "fresh": 3.0})
    assert compare.main([base, cur]) == 0
    out = capsys.readouterr().out
    assert "new" in out and "missing" in out


def test_files_without_normalised_costs_are_refused(tmp_path):
    empty = tmp_path / "e.json"
    empty.write_text(json.dumps({"benchmarks": [{"fullname": "x", "extra_info": {}}]}))
    assert compare.main([str(empty), str(empty)]) == 2


def test_costs_are_normalised_by_the_runs_own_fastest_verify(tmp_path, capsys):
    def run(name, verify_min, warm_min):
        data = {"benchmarks": [
            {"name": "test_calibration_raw_verify", "fullname": "b::test_calibration_raw_verify",
             "stats": {"min": verify_min, "data": [1, 2, 3]}, "extra_info": {}},
            {"name": "warm", "fullname": "b::warm", "stats": {"min": warm_min}, "extra_info": {}}]}
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)
    base = run("base.json", 80e-6, 200e-6)      # 2.5 verifies on a fast machine
    cur = run("cur.json", 120e-6, 300e-6)       # 2.5 verifies on a slower one: no regression
    assert compare.main([base, cur]) == 0
    slower = run("slow.json", 80e-6, 260e-6)    # 3.25 verifies: 30% worse
    assert compare.main([base, slower]) == 1
    assert compare.main([base, "--slim"]) == 0
    assert "data" not in json.loads((tmp_path / "base.json").read_text())["benchmarks"][0]["stats"]


def test_cpu_accounted_costs_use_the_verify_timed_on_their_own_core(tmp_path):
    def run(name, hub_cpu, hub_core_verify):
        data = {"benchmarks": [
            {"name": "test_calibration_raw_verify", "fullname": "b::test_calibration_raw_verify",
             "stats": {"min": 80e-6}, "extra_info": {}},
            {"name": "hub", "fullname": "b::hub", "stats": {"min": 1.0},
             "extra_info": {"cpu_seconds_per_operation": hub_cpu, "cpu_verify_seconds": hub_core_verify}}]}
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)
    assert compare.load(run("a.json", 800e-6, 100e-6))["b::hub"] == 8.0  # not 800 / 80
    base = run("base.json", 800e-6, 100e-6)
    # the hub's core got a third slower, and so did its verifies: the same cost
    assert compare.main([base, run("same.json", 1064e-6, 133e-6)]) == 0
    assert compare.main([base, run("worse.json", 1064e-6, 100e-6)]) == 1
