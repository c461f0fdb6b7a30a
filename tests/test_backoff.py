"""Backoff presets: each retry's delay stays within the SDK's bounds, scalar and vectorised forms agree."""

import math
import random

import numpy as np
import pytest

from devicekit.backoff import PRESETS, preset


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown backoff preset"):
        preset("sdk-that-does-not-exist")


def test_retry_numbers_start_at_one():
    with pytest.raises(ValueError):
        preset("aws-crt").delay(0, now=0.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("throttled", [False, True])
def test_scalar_delays_stay_within_bounds(name, throttled):
    b = preset(name)
    rng = random.Random(7)
    for retry in range(1, 12):
        lo, hi = b.bounds(retry, throttled=throttled)
        for _ in range(300):
            now = 1000.0 + rng.random() * 100  # azure-c aligns to whole seconds: compare at a whole second
            if b.kind == "azure-c":
                now = math.floor(now)
            d = b.delay(retry, now=now, throttled=throttled, rng=rng)
            assert lo - 1e-9 <= d <= hi + 1e-9, (name, retry, d, lo, hi)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_vectorised_form_matches_the_bounds(name):
    b = preset(name)
    rng = np.random.default_rng(3)
    retries = np.repeat(np.arange(1, 12), 500)
    d = b.vectorized(throttled=True)(retries, np.zeros(retries.size), rng)
    for retry in range(1, 12):
        lo, hi = b.bounds(retry, throttled=True)
        got = d[retries == retry]
        assert got.min() >= lo - 1e-9 and got.max() <= hi + 1e-9, (name, retry)


def test_azure_c_first_retry_is_immediate_then_doubles_in_whole_seconds():
    b = preset("azure-c")
    assert b.delay(1, now=50.3) == 0.0
    # refused at 50.3 s: the SDK compares time_t seconds, so the retry comes at floor(50.3) + wait
    assert b.delay(2, now=50.3, rng=random.Random(1)) == pytest.approx(0.7)
    assert b.delay(5, now=50.0, rng=random.Random(1)) == 8.0
    # 5 % jitter truncated to whole seconds: no spread at all until the wait reaches 32 s
    assert {b.delay(6, now=0.0, rng=random.Random(s)) for s in range(50)} == {16.0}
    assert len({b.delay(8, now=0.0, rng=random.Random(s)) for s in range(200)}) > 1


def test_aws_crt_full_jitter_is_uniform_below_the_cap():
    b = preset("aws-crt")
    rng = random.Random(5)
    d = [b.delay(3, now=0.0, rng=rng) for _ in range(4000)]
    assert 0.0 <= min(d) < 0.1 and 3.9 < max(d) <= 4.0
    assert sum(d) / len(d) == pytest.approx(2.0, rel=0.05)
    assert b.bounds(20) == (0.0, 120.0)


def test_azure_dotnet_throttling_policy_and_give_up():
    b = preset("azure-dotnet")
    assert b.bounds(1) == (0.1, 0.1)
    assert b.bounds(1, throttled=True) == (10.0, 10.0)
    assert b.bounds(30, throttled=True)[1] == 60.0 and b.bounds(30)[1] == 10.0
    # an immediate failure (no connection) never retries sooner than 1 s
    assert b.delay(1, now=0.0, connection_error=True) == 1.0
    assert not b.gives_up(0.0, 239.0) and b.gives_up(0.0, 240.0)
    assert not preset("azure-c").gives_up(0.0, 1e9)


def test_none_retries_at_once_and_exponential_has_no_jitter():
    assert preset("none").delay(9, now=3.3) == 0.0
    e = preset("exponential")
    assert [e.delay(k, now=0.0) for k in (1, 2, 3, 7, 8)] == [1.0, 2.0, 4.0, 60.0, 60.0]


def test_vectorised_preset_drives_the_storm_simulator():
    from certstorm.capacity.planner import simulate_storm

    fast = simulate_storm(5000, 1000.0, preset("aws-crt").vectorized(), seed=1)
    herd = simulate_storm(5000, 1000.0, preset("azure-c").vectorized(), seed=1)
    assert fast.admitted == herd.admitted == 5000
    assert fast.refusals > 0 and herd.refusals > 0
