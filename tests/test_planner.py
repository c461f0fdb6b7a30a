"""Capacity-planning maths: USL fits recover known parameters; the storm simulator obeys capacity."""

import math

import numpy as np
import pytest

from bench.capacity.planner import USL, fit_usl, simulate_storm


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
