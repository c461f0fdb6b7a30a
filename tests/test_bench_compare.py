"""The regression gate: refuses a slowdown beyond the threshold or a missing benchmark, passes within it."""

import json

from bench import compare


def _file(tmp_path, name, costs, **extra):
    data = {
        "benchmarks": [
            {"fullname": f"bench/b.py::{k}", "stats": {"min": 1.0}, "extra_info": {"verifies_min": v, **extra}}
            for k, v in costs.items()
        ]
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_regression_beyond_threshold_fails(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0, "cold": 8.0})
    cur = _file(tmp_path, "cur.json", {"warm": 2.4, "cold": 8.0})
    assert compare.main([base, cur, "--threshold", "0.15"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "+20.0%" in out


def test_within_threshold_passes_and_reports_new(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0})
    cur = _file(tmp_path, "cur.json", {"warm": 2.2, "fresh": 3.0})
    assert compare.main([base, cur]) == 0
    assert "new" in capsys.readouterr().out


def test_a_benchmark_missing_from_the_run_fails(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0, "cold": 8.0})
    partial = _file(tmp_path, "cur.json", {"warm": 2.0})
    assert compare.main([base, partial]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_a_benchmark_without_a_verify_beside_it_is_refused(tmp_path, capsys):
    base = _file(tmp_path, "base.json", {"warm": 2.0})
    bare = tmp_path / "bare.json"
    bare.write_text(
        json.dumps({"benchmarks": [{"fullname": "bench/b.py::warm", "stats": {"min": 1.0}, "extra_info": {}}]})
    )
    assert compare.main([base, str(bare)]) == 2
    assert "verifies_min" in capsys.readouterr().err


def test_costs_come_from_each_benchmarks_own_verify_not_the_sessions(tmp_path):
    """A partial run with the warm path 30% slower must fail even when the session's calibration
    benchmark happened to run on a slow stretch of the machine (the case the old gate passed)."""

    def run(name, warm_cost, calibration_min):
        data = {
            "benchmarks": [
                {
                    "name": "test_calibration_raw_verify",
                    "fullname": "b::test_calibration_raw_verify",
                    "stats": {"min": calibration_min},
                    "extra_info": {"verifies_min": 1.0},
                },
                {
                    "name": "warm",
                    "fullname": "b::warm",
                    "stats": {"min": 300e-6},
                    "extra_info": {"verifies_min": warm_cost},
                },
            ]
        }
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)

    base = run("base.json", 2.5, 80e-6)
    assert compare.main([base, run("slow.json", 3.25, 120e-6)]) == 1
    assert compare.main([base, run("same.json", 2.5, 120e-6)]) == 0


def test_slim_drops_raw_rounds(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps(
            {
                "benchmarks": [
                    {"fullname": "x", "stats": {"min": 1, "data": [1, 2]}, "extra_info": {"verifies_min": 1.0}}
                ]
            }
        )
    )
    assert compare.main([str(path), "--slim"]) == 0
    assert "data" not in json.loads(path.read_text())["benchmarks"][0]["stats"]


# -- the CI gate: best of a few runs, 1.5x the baseline ---------------------------------------------------
def _gate_runs(*runs):
    """A runner replaying ``runs`` (name suffix -> cost) in order, recording what each call asked for."""
    from bench import gate

    asked, replies = [], iter(runs)

    def runner(names):
        asked.append(list(names))
        costs = next(replies)
        return {n: costs[n.split("::")[-1]] for n in names if n.split("::")[-1] in costs}

    base = dict.fromkeys(gate.GATED, 2.0)
    return gate, base, asked, runner


def _all(cost, **override):
    from bench import gate

    return {n.split("::")[-1]: override.get(n.split("::")[-1], cost) for n in gate.GATED}


def test_gate_retimes_only_what_a_noisy_run_put_over_the_limit():
    gate, base, asked, runner = _gate_runs(_all(2.0, test_reconnect_authentication=3.5), _all(2.1))
    best = gate.best_of(base, 1.5, 3, runner)
    assert asked[1] == ["bench/bench_engine.py::test_reconnect_authentication"]
    assert best["bench/bench_engine.py::test_reconnect_authentication"] == 2.1 and len(asked) == 2


def test_gate_keeps_a_regression_that_every_attempt_shows():
    gate, base, asked, runner = _gate_runs(*[_all(2.0, **{"test_in_process_authentication[warm]": 3.2})] * 3)
    best = gate.best_of(base, 1.5, 3, runner)
    assert len(asked) == 3 and best["bench/bench_engine.py::test_in_process_authentication[warm]"] == 3.2


def test_gate_fails_past_the_limit_and_on_a_benchmark_that_did_not_run(tmp_path, monkeypatch, capsys):
    from bench import gate

    base = _file(tmp_path, "base.json", {n.split("::")[-1]: 2.0 for n in gate.GATED})
    base_data = json.loads(open(base).read())
    for bench, name in zip(base_data["benchmarks"], gate.GATED):
        bench["fullname"] = name
    open(base, "w").write(json.dumps(base_data))
    slow = {n: (3.1 if "warm" in n else 2.0) for n in gate.GATED}
    monkeypatch.setattr(gate, "run_benchmarks", lambda names: {n: slow[n] for n in names})
    assert gate.main(["--baseline", base, "--attempts", "2"]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    monkeypatch.setattr(gate, "run_benchmarks", lambda names: dict.fromkeys(names, 2.9))
    assert gate.main(["--baseline", base]) == 0
    monkeypatch.setattr(gate, "run_benchmarks", lambda names: {})
    assert gate.main(["--baseline", base, "--attempts", "1"]) == 1
    assert "did not run" in capsys.readouterr().out


def test_gate_needs_a_baseline_cost_for_every_gated_benchmark(tmp_path, capsys):
    from bench import gate

    assert gate.main(["--baseline", _file(tmp_path, "base.json", {"other": 1.0})]) == 2
    assert "has no cost for" in capsys.readouterr().err
