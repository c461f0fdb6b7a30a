"""Report analysis from synthetic timelines: knee, limiting side, scaling, references."""

import math

import pytest

from bench.capacity import analysis
from bench.capacity.planner import USL


def timeline(levels, *, workers=1, seconds=10, hub_us=400.0, gen_us=300.0, p99=lambda r: 5.0, err=0.0,
             ceiling=math.inf):
    """One sample a second; each level runs ``seconds``; the hub admits at most ``ceiling``/s."""
    rows, t, ok, errors, hub, gen = [], 0.0, 0.0, 0.0, 0.0, 0.0
    for target in levels:
        for _ in range(seconds):
            done = min(target, ceiling)
            ok += done * (1 - err)
            errors += done * err
            hub += done * hub_us / 1e6
            gen += done * gen_us / 1e6
            t += 1
            lat = p99(done) if done < ceiling else 900.0
            rows.append({"t": t, "phase": "step", "workers": workers, "target": target, "ok": ok,
                         "errors": errors, "hub_cpu": hub, "gen_cpu": gen, "p50": lat / 4, "p90": lat / 2,
                         "p99": lat, "p999": lat * 1.5})
    return rows


def test_knee_is_the_best_step_within_slo_errors_and_cpu():
    rows = timeline([500, 1000, 1500, 2000, 2500], ceiling=2200, hub_us=400)
    steps = analysis.steps_from_samples(rows, {1: 1.0})
    assert [round(s.achieved) for s in steps] == [500, 1000, 1500, 2000, 2200]
    k = analysis.knee(steps, slo_p99_ms=100)
    # 2,000/s costs 0.8 of a core: within the 85% CPU rule; 2,200/s breaks the p99 SLO
    assert round(k.achieved) == 2000
    assert k.hub_us_per_auth == pytest.approx(400)


def test_errors_and_cpu_exclude_a_step():
    steps = analysis.steps_from_samples(timeline([1000, 2000], hub_us=450, err=0.01), {1: 1.0})
    assert analysis.knee(steps, 100) is None
    steps = analysis.steps_from_samples(timeline([1000, 2000], hub_us=450), {1: 1.0})
    assert round(analysis.knee(steps, 100).achieved) == 1000  # 2,000/s x 450 µs = 90% CPU


def test_generator_saturated_first_is_named():
    steps = analysis.steps_from_samples(timeline([1000, 3000], hub_us=200, gen_us=300), {1: 1.0})
    assert analysis.limiting_side(steps) == "generator"
    steps = analysis.steps_from_samples(timeline([1000, 3000], hub_us=300, gen_us=100), {1: 1.0})
    assert analysis.limiting_side(steps) == "hub"


def test_scaling_predicts_from_fewer_workers_and_fits_usl_with_three_counts():
    s = analysis.scaling({1: 1000.0, 2: 1800.0})
    assert s.usl is None and s.predicted_from_fewer["predicted"] == pytest.approx(2000)
    assert s.predicted_from_fewer["error"] == pytest.approx(2000 / 1800 - 1)
    truth = USL(1000, 0.05, 0.01)
    pts = {n: float(truth.throughput(n)) for n in (1, 2, 3, 4)}
    s = analysis.scaling(pts)
    assert s.usl.alpha == pytest.approx(0.05, rel=1e-6)
    assert s.predicted_from_fewer["error"] == pytest.approx(0, abs=1e-9)


def test_cores_and_cloud_references():
    assert analysis.cores_needed(3500, 1000, None) == 4
    refs = {r["service"]: r for r in analysis.cloud_references(3333)}
    assert refs["Azure IoT Hub S1"]["units"] == 278 and not refs["Azure IoT Hub S1"]["possible"]
    assert refs["Azure IoT Hub S2"]["units"] == 28
    assert refs["Azure IoT Hub S3"]["units"] == 1
    assert not refs["AWS IoT Core (default quota)"]["possible"]


def test_shortfall_with_an_idle_hub_blames_the_generator():
    steps = analysis.steps_from_samples(timeline([500, 1000], hub_us=100, gen_us=100, ceiling=700), {1: 1.0})
    assert analysis.limiting_side(steps) == "generator"
    steps = analysis.steps_from_samples(timeline([500, 1000], hub_us=100, gen_us=100), {1: 1.0})
    assert analysis.limiting_side(steps) == "neither"
