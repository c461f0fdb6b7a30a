"""The capacity analysis from synthetic measurements: which steps hold, the knee, the saturated side, scaling
from hub-limited points only, steps cut from a swarm run, references."""

import math

import pytest

from certstorm.capacity import analysis
from certstorm.capacity.planner import USL


def step(
    target,
    *,
    achieved=None,
    workers=1,
    stage="ramp",
    hub_cpu=0.5,
    gen_cpu=0.5,
    p99=5.0,
    errors=0.0,
    start=None,
    hub_us=400.0,
    gen_us=300.0,
):
    achieved = target if achieved is None else achieved
    return {
        "workers": workers,
        "stage": stage,
        "target": float(target),
        "start": float(start or target),
        "end": float(start or target) + 4,
        "achieved": float(achieved),
        "error_rate": errors,
        "hub_cpu": hub_cpu,
        "gen_cpu": gen_cpu,
        "machine_cpu": 0.6,
        "hub_us_per_auth": hub_us,
        "gen_us_per_auth": gen_us,
        "count": int(achieved * 4),
        "p50": p99 / 4,
        "p90": p99 / 2,
        "p99": p99,
        "p999": p99 * 1.5,
    }


def ramp(*, hub_us, gen_us, ceiling=math.inf, levels=(500, 1000, 1500, 2000, 2500), workers=1, hub_cores=1.0):
    """Steps as a machine would measure them: CPU from the cost per authentication, the hub capped at ``ceiling``."""
    out = []
    for i, target in enumerate(levels):
        done = min(target, ceiling)
        out.append(
            step(
                target,
                achieved=done,
                workers=workers,
                start=100 * workers + i * 5,
                hub_cpu=done * hub_us / 1e6 / hub_cores,
                gen_cpu=done * gen_us / 1e6,
                p99=5.0 if done < ceiling else 900.0,
                hub_us=hub_us,
                gen_us=gen_us,
            )
        )
    return out


def test_a_step_holds_only_within_slo_errors_cpu_and_its_target():
    assert analysis.holds(step(1000), slo_ms=100)
    assert analysis.reasons(step(1000, p99=150), 100) == ["p99 150 ms > 100 ms"]
    assert analysis.reasons(step(1000, errors=0.002), 100) == ["errors 0.20%"]
    assert analysis.reasons(step(1000, hub_cpu=0.86), 100) == ["hub CPU 86%"]
    assert analysis.reasons(step(1000, gen_cpu=0.9), 100) == ["generator CPU 90%"]
    assert analysis.reasons(step(1000, achieved=850), 100) == ["admitted 850/s of 1,000/s"]
    assert "no authentication completed" in analysis.reasons(dict(step(1000), p99=None), 100)


def test_knee_is_the_highest_rate_that_holds():
    steps = ramp(hub_us=400, gen_us=200, ceiling=2200)
    k = analysis.knee(steps, slo_ms=100)
    # 2,000/s costs 0.8 of the hub's core: holds; 2,500/s is capped at 2,200 and breaks the SLO and CPU
    assert k["achieved"] == 2000 and k["hub_us_per_auth"] == 400
    assert analysis.knee(steps, 100, workers=2) is None


def test_the_saturated_side_comes_from_measured_cpu():
    hub = ramp(hub_us=400, gen_us=200)  # hub: 2,500/s x 400 µs = 100% of its core; generator 50%
    gen = ramp(hub_us=200, gen_us=400)
    assert analysis.side_of(analysis.first_break(hub, 100)) == "hub"
    assert analysis.side_of(analysis.first_break(gen, 100)) == "generator"
    # falling behind with both sides idle is neither side's saturation, and says so
    idle = [step(500, hub_cpu=0.13, gen_cpu=0.18), step(1000, achieved=700, hub_cpu=0.18, gen_cpu=0.13)]
    assert analysis.side_of(analysis.first_break(idle, 100)) == "neither"
    assert analysis.side_of(analysis.first_break(ramp(hub_us=100, gen_us=100), 100)) == "not-found"


@pytest.mark.parametrize("hub_cpu,gen_cpu", [(0.85, 0.1), (0.1, 0.85), (0.95, 0.9), (0.86, 0.99)])
def test_never_neither_when_a_side_reached_the_limit(hub_cpu, gen_cpu):
    broke = analysis.first_break([step(1000, achieved=500, hub_cpu=hub_cpu, gen_cpu=gen_cpu)], 100)
    side = analysis.side_of(broke)
    assert side == ("hub" if hub_cpu >= gen_cpu else "generator")


def test_verdicts_take_the_refinement_over_the_ramp():
    steps = ramp(hub_us=400, gen_us=200, levels=(1000, 2000, 3000))
    steps.append(step(2400, stage="refine", start=500, hub_cpu=0.96, achieved=2300))
    steps.append(step(2200, stage="refine", start=490, hub_cpu=0.84, achieved=2200))
    [v] = analysis.verdicts(steps, [{"workers": 1, "seconds": 40, "bound_s": 80}], 100)
    assert v["side"] == "hub" and v["broke"]["target"] == 2400 and v["knee"]["achieved"] == 2200
    assert analysis.hub_capacity_points([v]) == {1: 2200}
    assert analysis.overall_side([v, dict(v, side="generator")]) == "hub"


def test_live_break_averages_the_last_seconds():
    calm = {"ok_rate": 1000, "error_rate": 0, "hub_cpu": 0.5, "gen_cpu": 0.5}
    assert analysis.live_break([calm] * 3, 1000) == ""
    assert analysis.live_break([calm, calm, dict(calm, hub_cpu=0.99)], 1000) == ""  # one noisy second
    assert analysis.live_break([dict(calm, gen_cpu=0.9)] * 3, 1000) == "generator CPU 90%"
    assert analysis.live_break([dict(calm, ok_rate=800)] * 3, 1000) == "admitted 800/s of 1,000/s"


def test_steps_from_a_swarm_run_use_its_phases_and_the_samples_inside():
    t0 = 1000.0
    swarm = {
        "run": {"t0": t0, "duration_s": 9.0},
        "phases": [
            {"phase": 0, "start": 0.0, "end": 5.0, "rate": 500},
            {"phase": 1, "start": 5.0, "end": 10.0, "rate": 1000},
        ],
        "rates": {
            "phases": [
                {
                    "phase": 0,
                    "achieved_rate": 500,
                    "failed_rate": 0,
                    "auth_count": 2000,
                    "auth_p50_us": 2000,
                    "auth_p90_us": 3000,
                    "auth_p99_us": 9000,
                    "auth_p999_us": 12000,
                },
                {"phase": 1, "achieved_rate": 900, "failed_rate": 9, "auth_count": 0},
            ]
        },
    }
    samples = []
    for i in range(11):  # 500/s for 5 s, then 1,000/s; hub 400 µs, generator 300 µs per authentication
        done = 500 * min(i, 5) + 1000 * max(0, i - 5)
        samples.append(
            {
                "t": i,
                "wall": t0 + i,
                "ok": done,
                "errors": 0,
                "hub_cpu_s": done * 400e-6,
                "gen_cpu_s": done * 300e-6,
                "machine_cpu_s": i * 1.5,
            }
        )
    first, second = analysis.steps_from_swarm(swarm, samples, 1, "ramp", hub_cores=1.0, machine_cores=2)
    assert first["achieved"] == pytest.approx(500) and first["hub_cpu"] == pytest.approx(0.2)
    assert first["hub_us_per_auth"] == pytest.approx(400) and first["gen_us_per_auth"] == pytest.approx(300)
    assert first["p99"] == 9.0 and first["machine_cpu"] == pytest.approx(0.75)
    # the second phase ended early (the run stopped at 9 s), saw failures and no completed authentication
    assert second["end"] <= 9.5 and second["error_rate"] == pytest.approx(9 / 909) and second["p99"] is None


def test_scaling_fits_hub_limited_points_only_and_otherwise_says_which_run_gives_them():
    s = analysis.scaling({1: 1000.0}, cores=2)
    assert s.usl is None and s.predicted_from_fewer is None and "--master" in s.note
    truth = USL(1000, 0.05, 0.01)
    s = analysis.scaling({n: float(truth.throughput(n)) for n in (1, 2, 3, 4)}, cores=8)
    assert s.usl.alpha == pytest.approx(0.05, rel=1e-6)
    assert s.predicted_from_fewer["error"] == pytest.approx(0, abs=1e-9)


def test_cores_and_cloud_references():
    assert analysis.cores_needed(3500, 1000, None) == 4
    refs = {r["service"]: r for r in analysis.cloud_references(3333)}
    assert refs["Azure IoT Hub S1"]["units"] == 278 and not refs["Azure IoT Hub S1"]["possible"]
    assert refs["Azure IoT Hub S2"]["units"] == 28
    assert refs["Azure IoT Hub S3"]["units"] == 1
    assert not refs["AWS IoT Core (default quota)"]["possible"]


def test_a_rate_that_broke_once_and_held_when_retried_is_not_the_verdict():
    noisy = step(1000, achieved=800, hub_cpu=0.4, gen_cpu=0.3, start=10)
    steps = [step(500, start=5), noisy, step(1000, start=20), step(1500, start=25)]
    search = {"workers": 1, "seconds": 80, "bound_s": 80}
    [v] = analysis.verdicts(steps, [search], 100)
    assert v["side"] == "neither"  # an old run's record: the first break counts
    [v] = analysis.verdicts(steps, [dict(search, broke=None)], 100)
    assert v["side"] == "not-found" and v["knee"]["achieved"] == 1500
