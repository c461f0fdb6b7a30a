"""Capacity-planning maths: USL fits recover known parameters; the storm simulator obeys capacity."""

import math

import numpy as np
import pytest

from certstorm.capacity.planner import USL, fit_usl, simulate_storm


def test_usl_fit_needs_enough_points():
    with pytest.raises(ValueError):
        fit_usl([1, 2], [100, 180])
    with pytest.raises(ValueError):
        fit_usl([2, 3, 4], [100, 180, 250])
    with pytest.raises(ValueError):
        fit_usl([1, 2, 4], [100, -1, 250])


def test_usl_fit_recovers_known_parameters():
    truth = USL(gamma=1500.0, alpha=0.05, beta=0.002)
    n = np.array([1, 2, 4, 8, 16])
    fitted = fit_usl(n, truth.throughput(n))
    assert fitted.gamma == pytest.approx(1500.0)
    assert fitted.alpha == pytest.approx(0.05, rel=1e-6)
    assert fitted.beta == pytest.approx(0.002, rel=1e-6)
    assert fitted.peak_workers == pytest.approx(math.sqrt(0.95 / 0.002))


def test_workers_for_rate():
    model = USL(1000.0, 0.0, 0.0)
    assert model.workers_for(3500) == 4
    assert USL(1000.0, 0.5, 0.01).workers_for(10_000) is None


def fixed(delay):
    return lambda retries, prev, rng: np.full(retries.size, delay)


def test_storm_admits_at_capacity():
    result = simulate_storm(10_000, capacity=1000, backoff=fixed(1.0), burst=1000)
    assert result.admitted == 10_000
    # 1,000 in the initial burst, then 1,000 per second: about 9 s more
    assert 8.5 <= result.time_to_admit <= 10.5
    assert result.refusals > 0 and result.attempts == result.admitted + result.refusals
    assert result.admitted_by(result.time_to_admit) == 10_000


def test_storm_without_refusals_when_capacity_suffices():
    result = simulate_storm(500, capacity=1000, backoff=fixed(1.0), burst=1000)
    assert result.refusals == 0 and result.time_to_admit <= 0.02


def test_storm_horizon_reports_unfinished():
    result = simulate_storm(10_000, capacity=10, backoff=fixed(5.0), horizon=20)
    assert result.admitted < 10_000 and math.isinf(result.time_to_admit)


def test_storm_rejects_nonsense():
    with pytest.raises(ValueError):
        simulate_storm(0, 10, fixed(1))
    with pytest.raises(ValueError):
        simulate_storm(10, 0, fixed(1))


def test_an_attempt_cap_spreads_the_herd():
    herd = simulate_storm(5000, capacity=500, backoff=fixed(1.0), burst=500)
    capped = simulate_storm(5000, capacity=500, backoff=fixed(1.0), burst=500, attempt_rate=600)
    assert capped.admitted == herd.admitted == 5000
    assert capped.refusals < herd.refusals / 3
    assert capped.time_to_admit == pytest.approx(herd.time_to_admit, rel=0.2)


# -- certstorm plan ---------------------------------------------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from certstorm.capacity.plan import plan  # noqa: E402

STORED = {
    "run_id": "r1",
    "slo_p99_ms": 500,
    "knee": {"achieved": 2000.0, "p50": 2.0},
    "projection": {"per_core": 2000.0},
    "scaling": {"usl": None},
}


def _plan_cli(tmp_path, *args):
    (tmp_path / "summary.json").write_text(json.dumps(STORED))
    return subprocess.run(
        [sys.executable, "-m", "certstorm.cli", "plan", "--from", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,named",
    [
        (["--devices", "-5"], "--devices"),
        (["--devices", "0"], "--devices"),
        (["--devices", "many"], "--devices"),
        (["--devices", "10", "--window", "0s"], "--window"),
        (["--devices", "10", "--window", "soon"], "--window"),
        (["--devices", "10", "--p99", "0ms"], "--p99"),
        (["--devices", "10", "--backoff", "nope"], "--backoff"),
        (["--devices", "10", "--from", "/nonexistent/run"], "--from"),
    ],
)
def test_plan_refuses_every_bad_argument_by_name(tmp_path, args, named):
    proc = _plan_cli(tmp_path, *args)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and f"argument {named}" in out[-1], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_json_is_only_strict_json(tmp_path):
    proc = _plan_cli(tmp_path, "--devices", "20000", "--window", "60s", "--json")
    assert proc.returncode == 0, proc.stderr

    def refuse(constant):
        raise ValueError(constant)

    out = json.loads(proc.stdout, parse_constant=refuse)
    assert out["cores_even_arrival"] == 1 and out["storm_possible"]


def test_plan_cores_let_the_storm_finish_in_the_window():
    out = plan(200_000, 120.0, 500, STORED, "azure-c")
    assert out["cores_storm"] >= out["cores_even_arrival"] == 1
    # the answer is what the simulation says, and one core fewer would not do
    assert out["storm_time_to_admit"] <= 120
    from certstorm.capacity.plan import storm_at

    short = storm_at(200_000, 2000.0 * (out["cores_storm"] - 1), "azure-c", 0.002, 120.0)
    assert not short.time_to_admit <= 120


def test_plan_says_when_no_core_count_can():
    # azure-c retries at 1, 2, 4 ... s: a 1 s window leaves one wave, whatever the capacity per core
    out = plan(10_000_000, 1.0, 500, dict(STORED, projection={"per_core": 1.0}), "azure-c")
    assert out["cores_storm"] is None and not out["storm_possible"]
    assert "no core count" in out["storm_answer"] and "spread" in out["storm_answer"]
