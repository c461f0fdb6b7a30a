"""The capacity analysis from synthetic measurements: which steps hold, the knee by admitted rate, the
saturated side, the cost as a slope, the ceiling, steps cut from whole seconds, the search's schedule,
scaling from hub-limited points only, and references."""

import itertools
import math

import numpy as np
import pytest
from synthetic import Model, simulate

from certstorm.capacity import analysis
from certstorm.capacity.planner import USL
from certstorm.capacity.search import Search, SearchSettings
from certstorm.capacity.windows import cut_steps, window
from loadgen import sparse_counts


def step(
    target,
    *,
    achieved=None,
    stage="ramp",
    target_cpu=0.5,
    gen_cpu=0.5,
    p99=5.0,
    errors=0.0,
    start=None,
    segment="w1",
    cores_busy=None,
    gen_busy=None,
):
    achieved = target if achieved is None else achieved
    return {
        "segment": segment,
        "workers": 1,
        "stage": stage,
        "phase": 0,
        "target": None if target is None else float(target),
        "start": float(start if start is not None else (target or 0)),
        "end": float(start or target or 0) + 5,
        "seconds": 5,
        "achieved": float(achieved),
        "intended": float(target or achieved),
        "error_rate": errors,
        "target_cpu": target_cpu,
        "target_cores_busy": cores_busy,
        "target_us_per_auth": 400.0,
        "gen_cpu": gen_cpu,
        "gen_cpu_by_worker": {"0": gen_cpu},
        "gen_cores_busy": gen_busy,
        "gen_us_per_auth": 300.0,
        "machine_cpu": 0.6,
        "reconnect_share": None,
        "count": int(achieved * 5),
        "p50": p99 / 4,
        "p90": p99 / 2,
        "p99": p99,
        "p999": p99 * 1.5,
        "workers_missing": [],
    }


# -- steps ------------------------------------------------------------------------------------------------
def test_a_step_holds_only_within_slo_errors_cpu_and_its_target():
    assert analysis.holds(step(1000), slo_ms=100)
    assert analysis.reasons(step(1000, p99=150), 100) == ["p99 150 ms > 100 ms"]
    assert analysis.reasons(step(1000, errors=0.002), 100) == ["errors 0.20%"]
    assert analysis.reasons(step(1000, target_cpu=0.86), 100) == ["target CPU 86%"]
    assert analysis.reasons(step(1000, gen_cpu=0.9), 100) == ["generator CPU 90%"]
    assert analysis.reasons(step(1000, achieved=850), 100) == ["admitted 850/s of 1,000/s"]
    assert "no authentication completed" in analysis.reasons(dict(step(1000), p99=None), 100)
    # a target whose CPU is not measured is judged without it; the closed-loop ceiling has no intended rate
    assert analysis.holds(step(1000, target_cpu=None), 100)
    assert analysis.reasons(step(None, achieved=1500, target_cpu=0.99, stage="ceiling"), 100) == ["target CPU 99%"]


def test_a_step_behind_its_target_beyond_counting_noise_breaks():
    # the bad cases first: a shortfall beyond two standard deviations of the arrival count breaks at any
    # rate; at large counts the 90% rule alone decides (88% of 5,000 arrivals is 8.5 standard deviations)
    assert analysis.behind(44, 60, 1) and analysis.behind(43, 60, 3)
    assert analysis.behind(880, 1000, 5) and analysis.behind(899.9, 1000, 5)
    assert analysis.reasons(dict(step(60, achieved=40), seconds=1), 100) == ["admitted 40/s of 60/s"]
    # one second at 60/s admitted 50 (83%): Poisson(60) is 60 ± 7.7, so that is the draw, not the target
    assert not analysis.behind(50, 60, 1) and analysis.holds(dict(step(60, achieved=50), seconds=1), 100)
    assert not analysis.behind(900, 1000, 5)


def test_a_system_that_keeps_up_is_rarely_judged_behind_at_any_rate():
    """Admitted = the Poisson draw of a system that keeps up with every arrival: judged behind in at most
    about 2.3% of steps (two standard deviations), where the 90% rule alone judged one in five at 60/s."""
    rng = np.random.default_rng(7)
    for rate, seconds in ((20, 1), (60, 1), (60, 3), (200, 2), (1000, 5)):
        draws = rng.poisson(rate * seconds, 20_000) / seconds
        share = np.mean([analysis.behind(a, rate, seconds) for a in draws])
        assert share <= 0.035, (rate, seconds, share)
    naive = np.mean(rng.poisson(60, 20_000) < analysis.BEHIND * 60)
    assert naive > 0.15  # what the allowance is for


def test_steps_of_reconnects_after_the_fleet_ran_out_make_no_knee_break_slope_or_ceiling():
    # first connections broke at 2,000/s; later steps of reconnects (cheaper for the hub) held above it
    first = [dict(step(r, start=i), reconnect_share=0.0) for i, r in enumerate((500, 1000, 1500))]
    broke = dict(step(2000, target_cpu=0.91, start=3), reconnect_share=0.0)
    again = [dict(step(r, target_cpu=0.45, start=4 + i), reconnect_share=1.0) for i, r in enumerate((1750, 1875))]
    top = dict(step(None, achieved=4100, stage="ceiling", target_cpu=0.86, start=6), reconnect_share=1.0)
    steps = [*first, broke, *again, top]
    assert analysis.knee(steps, 100)["target"] == 1500
    assert analysis.decisive_break(steps, 100)["target"] == 2000
    assert analysis.ceiling(steps) is None and analysis.judged(steps) == [*first, broke]
    # a run of reconnects only (a fleet admitted before) is judged on its own kind
    assert analysis.knee(again, 100)["target"] == 1875
    assert analysis.ceiling([*again, top]) is top


def test_the_knee_is_chosen_by_admitted_rate_not_by_intended_rate():
    # 1,100/s intended delivered 995/s (90.5%: it holds) while 1,000/s delivered all of it: the knee is
    # the step that admitted more, not the one that was asked for more
    held_short = step(1100, achieved=995, start=10)
    held_full = step(1000, achieved=1000, start=5)
    assert analysis.holds(held_short, 100) and analysis.holds(held_full, 100)
    assert analysis.knee([held_full, held_short], 100) is held_full
    assert analysis.knee([held_short, held_full, step(1200, target_cpu=0.9, start=15)], 100) is held_full


def test_a_rate_that_held_once_and_broke_once_is_not_the_knee():
    # 400/s measured twice: once it held (375/s, 94%), once it fell behind with neither side busy; the knee
    # is the highest rate that held every time, and the break is the rate that did not
    steps = [
        step(400, achieved=375, start=0),
        step(400, achieved=324, target_cpu=0.26, gen_cpu=0.19, start=3),
        step(200, start=6, stage="refine"),
        step(300, start=9, stage="refine"),
    ]
    assert analysis.knee(steps, 100)["target"] == 300
    broke = analysis.decisive_break(steps, 100)
    assert broke["target"] == 400 and broke["achieved"] == 324 and analysis.side_of(broke) == "neither"


def test_the_ceiling_is_never_the_knee_and_never_the_break():
    steps = [
        step(1000, start=0),
        step(1500, target_cpu=0.9, start=5),
        step(None, achieved=1800, stage="ceiling", target_cpu=0.99, start=10),
    ]
    assert analysis.knee(steps, 100)["target"] == 1000
    assert analysis.decisive_break(steps, 100)["target"] == 1500
    assert analysis.ceiling(steps)["achieved"] == 1800


def test_the_decisive_break_is_the_lowest_broken_step_above_the_knee():
    steps = [
        step(500, start=0),
        step(1000, target_cpu=0.9, start=5),
        step(750, start=10),
        step(875, target_cpu=0.88, start=15),
        step(1500, target_cpu=0.95, start=20),
    ]
    assert analysis.knee(steps, 100)["target"] == 750
    assert analysis.decisive_break(steps, 100)["target"] == 875
    assert analysis.decisive_break([step(500), step(600)], 100) is None


@pytest.mark.parametrize("target_cpu,gen_cpu", [(0.9, 0.9), (0.86, 0.99), (0.99, 0.86)])
def test_never_neither_when_a_side_reached_the_limit(target_cpu, gen_cpu):
    assert analysis.side_of(step(1000, target_cpu=target_cpu, gen_cpu=gen_cpu)) in ("target", "generator")


def test_the_saturated_side_comes_from_measured_cpu():
    assert analysis.side_of(step(1000, target_cpu=0.95, gen_cpu=0.5)) == "target"
    assert analysis.side_of(step(1000, target_cpu=0.5, gen_cpu=0.95)) == "generator"
    assert analysis.side_of(step(1000, target_cpu=0.5, gen_cpu=0.5, p99=900)) == "neither"
    assert analysis.side_of(step(1000, target_cpu=None, gen_cpu=0.95)) == "generator"
    assert analysis.side_of(None) == "not-found"


def test_the_cost_slope_recovers_the_fixed_part_and_the_marginal_cost():
    fixed, per_auth = 0.1, 450e-6
    steps = [step(r, cores_busy=fixed + r * per_auth, gen_busy=0.02 + r * 300e-6) for r in (500, 1000, 1500, 2000)]
    cost = analysis.cost_slope(steps, "target_cores_busy")
    assert cost["slope_us"] == pytest.approx(450.0) and cost["fixed_cores"] == pytest.approx(0.1)
    assert cost["r2"] == pytest.approx(1.0) and cost["steps"] == 4
    assert analysis.cost_slope(steps, "gen_cores_busy")["slope_us"] == pytest.approx(300.0)
    # the average at a low rate overstates the marginal cost: the fixed part is spread over fewer admissions
    assert fixed / 500 * 1e6 + 450 > cost["slope_us"]
    assert analysis.cores_for(3000, cost) == pytest.approx(fixed + 3000 * per_auth)
    assert analysis.cost_slope(steps[:2], "target_cores_busy") is None  # too few steps
    assert analysis.cost_slope([dict(s, target_cores_busy=None) for s in steps], "target_cores_busy") is None


# -- whole-second windows ------------------------------------------------------------------------------------
def _seconds(first, last, rate, workers=(0,), skip=()):
    rows = []
    for s in range(first, last):
        rows.append(
            {
                "second": s,
                "workers": {
                    str(w): {
                        "second": s,
                        "intended": rate,
                        "admitted": rate,
                        "failed": 0,
                        "retries": 0,
                        "cpu_s": 0.3,
                        "lat": sparse_counts([1000.0] * rate),
                    }
                    for w in workers
                    if (w, s) not in skip
                },
            }
        )
    return rows


def test_a_window_is_the_whole_seconds_between_two_changes_of_rate():
    schedule = [
        {"at": 100, "rate": 500, "stage": "ramp"},
        {"at": 105, "rate": 1000, "stage": "ramp"},
        {"at": 110.5, "stop": True},
    ]
    assert window(schedule, 0) == (100, 105)
    assert window(schedule, 1) == (105, 110)  # the half second before the stop is no whole second
    assert window(schedule, 2) is None


def test_steps_take_only_their_own_seconds_and_nothing_after_the_stop():
    schedule = [
        {"at": 100, "rate": 500, "stage": "ramp", "phase": 0},
        {"at": 105, "rate": 1000, "stage": "ramp", "phase": 1},
        {"at": 110, "stop": True},
    ]
    # the swarm ran before the first step and after the stop at other rates: none of it may count
    seconds = _seconds(97, 100, 50) + _seconds(100, 105, 500) + _seconds(105, 110, 1000) + _seconds(110, 112, 7)
    samples = [{"t": s, "cpu_s": (s - 90) * 0.5, "busiest_s": 0.5, "machine_s": s} for s in range(95, 113)]
    steps = cut_steps(
        schedule, seconds, samples, segment="w1", workers=1, target_cores=1.0, machine_cores=2, origin=90.0
    )
    assert [(s["target"], s["achieved"], s["seconds"], s["start"], s["end"]) for s in steps] == [
        (500.0, 500.0, 5, 10.0, 15.0),
        (1000.0, 1000.0, 5, 15.0, 20.0),
    ]
    assert steps[0]["target_cpu"] == pytest.approx(0.5) and steps[0]["target_us_per_auth"] == pytest.approx(1000.0)
    assert steps[1]["gen_cpu"] == pytest.approx(0.3) and steps[1]["count"] == 5000
    assert 0.9 < steps[1]["p50"] < 1.1  # ms, from the per-second histograms


def test_a_worker_missing_from_a_window_is_named_and_the_step_judged_on_the_others():
    schedule = [{"at": 100, "rate": 1000, "stage": "ramp"}, {"at": 105, "stop": True}]
    lost = {(1, s) for s in range(102, 105)}
    seconds = _seconds(100, 105, 500, workers=(0, 1), skip=lost)
    [s] = cut_steps(
        schedule,
        seconds,
        [],
        segment="target",
        workers=None,
        target_cores=None,
        machine_cores=2,
        origin=0.0,
        expected={0, 1, 2},
    )
    assert s["workers_missing"] == [2]  # worker 2 never reported a second of this window
    assert s["achieved"] == pytest.approx((5 * 500 + 2 * 500) / 5) and s["target_cpu"] is None
    assert set(s["gen_cpu_by_worker"]) == {"0", "1"}


def test_the_busiest_thread_counts_when_it_is_busier_than_the_cores_on_average():
    schedule = [{"at": 100, "rate": 500, "stage": "ramp"}, {"at": 102, "stop": True}]
    # four cores, one thread busy 90%: the target is saturated although the tree uses 0.9 of 4 cores
    samples = [{"t": s, "cpu_s": (s - 100) * 0.9, "busiest_s": 0.9, "machine_s": s} for s in range(100, 103)]
    [s] = cut_steps(
        schedule,
        _seconds(100, 102, 500),
        samples,
        segment="target",
        workers=None,
        target_cores=4.0,
        machine_cores=4,
        origin=0.0,
    )
    assert s["target_cpu"] == pytest.approx(0.9) and s["target_cores_busy"] == pytest.approx(0.9)


def test_late_and_missing_readings_are_placed_at_the_time_they_were_read():
    schedule = [{"at": 100, "rate": 500, "stage": "ramp"}, {"at": 106, "stop": True}]
    # the target burns 0.5 CPU s per second; a busy sampler read some seconds late and missed two outright
    times = [99.05, 100.05, 101.6, 103.9, 105.05, 106.3]
    samples = [{"t": t, "cpu_s": (t - 90) * 0.5, "busiest_s": 0.5, "machine_s": t} for t in times]
    [s] = cut_steps(
        schedule,
        _seconds(100, 106, 500),
        samples,
        segment="target",
        workers=None,
        target_cores=1.0,
        machine_cores=1,
        origin=0.0,
    )
    assert s["target_cpu"] == pytest.approx(0.5) and s["machine_cpu"] == pytest.approx(1.0)
    # readings too far apart bracket nothing: unknown, never a guess
    sparse = [samples[0], samples[-1]]
    [s] = cut_steps(
        schedule,
        _seconds(100, 106, 500),
        sparse,
        segment="target",
        workers=None,
        target_cores=1.0,
        machine_cores=1,
        origin=0.0,
    )
    assert s["target_cpu"] is None and s["machine_cpu"] is None


# -- the search's schedule -----------------------------------------------------------------------------------
def test_the_search_ramps_refines_measures_the_ceiling_and_stops_without_gaps():
    settings = SearchSettings(start=500, add=500, step_s=5, bound_s=80, slo_ms=100, ceiling_s=10)
    search, _, _, steps, _ = simulate(Model(capacity=1800, target_us=450, fixed=0.05), settings)
    entries = search.entries
    stages = [e.get("stage", "stop") for e in entries]
    assert stages[0] == "ramp" and stages[-2:] == ["ceiling", "stop"] and "refine" in stages
    for a, b in itertools.pairwise(entries):  # every entry starts when the one before it ends
        assert b["at"] == a["at"] + {"ceiling": 10, "settle": a.get("seconds")}.get(a["stage"], 5)
    assert entries[-1]["at"] - entries[0]["at"] <= 80
    # every second is a window, but the settling after a step that broke (which no step measures)
    settle = [e for e in entries if e.get("stage") == "settle"]
    assert settle and all(e["rate"] == 0 and 1 <= e["seconds"] <= 5 for e in settle)
    assert sum(s["seconds"] for s in steps) + sum(e["seconds"] for e in settle) == entries[-1]["at"] - entries[0]["at"]
    for e in settle:  # only ever after a step that broke, and before a measured one
        before, after = entries[entries.index(e) - 1], entries[entries.index(e) + 1]
        [judged] = [s for s in steps if s["phase"] == before["phase"]]
        assert analysis.reasons(judged, 100) and after["stage"] in ("ramp", "refine", "ceiling")
    refine = [e["rate"] for e in entries if e.get("stage") == "refine"]
    assert refine == sorted(refine) and len(refine) == 3
    knee = analysis.knee(steps, 100)
    # 85% of a 1,800/s target at 450 µs + 0.05 cores is about 1,780/s of CPU... the knee lands below the
    # first step at 85% CPU and above the last that was under it
    assert 1000 <= knee["achieved"] <= (0.85 - 0.05) / 450e-6
    assert analysis.ceiling(steps)["achieved"] == pytest.approx(1800)


def test_a_rate_that_breaks_with_neither_side_saturated_is_tried_once_more():
    search = Search(SearchSettings(start=500, add=500, step_s=5, bound_s=100, slo_ms=100), 0)
    noisy = step(500, target_cpu=0.4, gen_cpu=0.4, p99=500)
    assert search.next(noisy)["rate"] == 500 and search.current["stage"] == "ramp"
    assert search.next(noisy)["stage"] == "refine"  # the second time it is believed


def test_a_low_rate_judged_on_its_first_second_is_not_broken_by_a_low_poisson_draw():
    # a run against a broker at 60/s: the step's first second drew 58 arrivals and admitted 50, then 67 and
    # 54; judged on that second alone the search used to retry 60/s and then refine below a rate that held
    search = Search(SearchSettings(start=60, add=120, step_s=3, bound_s=24, slo_ms=1000, ceiling_s=3), 0)
    first_second = dict(step(60, achieved=50, target_cpu=0.17, gen_cpu=0.18, p99=98), seconds=1)
    assert search.next(first_second) == search.current and search.current["rate"] == 180
    assert search.current["stage"] == "ramp" and not search.retried


def test_a_ramp_step_that_broke_in_its_last_seconds_bounds_the_refinement():
    settings = SearchSettings(start=500, add=500, step_s=5, bound_s=80, slo_ms=100, ceiling_s=10)
    search = Search(settings, 0)
    search.next(step(500))
    search.next(step(1000))
    first_seconds = step(1500, target_cpu=0.80)  # its first seconds held: the ramp moves on to 2,000/s
    assert search.next(first_seconds)["rate"] == 2000
    ramp_1500 = search.entries[2]
    search.record(search.entries[1], step(1000))  # held on all its seconds: nothing changes
    search.record(ramp_1500, step(1500, target_cpu=0.88))  # on all its seconds it broke
    search.next(step(2000, target_cpu=0.97))
    refine = [e["rate"] for e in search.entries if e.get("stage") == "refine"] + [r for _, r in search.plan]
    assert refine == [1125, 1250, 1375]  # between the last that held and the lowest that broke, not 1,500-2,000
    assert search.why_stopped.startswith("1,500/s broke (target CPU 88%")


def test_a_late_break_ends_the_ramp_even_when_the_current_step_seems_to_hold():
    search = Search(SearchSettings(start=500, add=500, step_s=5, bound_s=80, slo_ms=100, ceiling_s=10), 0)
    search.next(step(500))
    search.next(step(1000))
    search.record(search.entries[1], step(1000, p99=400.0))  # broke on its slow last seconds
    nxt = search.next(step(1500, target_cpu=0.6))  # judged on its first seconds only
    assert nxt["stage"] == "refine" and nxt["rate"] == pytest.approx(625)
    assert search.entries[-2]["stage"] == "ramp"  # no settle: the step just judged did not break


def test_a_retried_rate_is_judged_by_its_retry_not_by_the_first_attempt_found_broken_later():
    search = Search(SearchSettings(start=500, add=500, step_s=5, bound_s=80, slo_ms=100, ceiling_s=10), 0)
    search.next(step(500))
    noisy = step(1000, target_cpu=0.4, gen_cpu=0.4, p99=500)  # broke with neither side busy: tried again
    assert search.next(noisy)["rate"] == 1000
    first = next(e for e in search.entries if e.get("stage") == "ramp" and e["rate"] == 1000)
    search.record(first, noisy)  # the first attempt, on all its seconds: broken, as already known
    nxt = search.next(step(1000))  # the retry held
    assert nxt["stage"] == "ramp" and nxt["rate"] == 1500


def test_a_target_that_refuses_everything_stops_the_search_at_once():
    search, _, _, steps, _ = simulate(Model(refuse=True), SearchSettings(slo_ms=100))
    assert [e.get("stop", False) for e in search.entries] == [False, True]
    assert search.why_stopped == "the target refused every authentication" and steps[0]["error_rate"] == 1.0


def test_the_time_bound_ends_a_ramp_that_never_breaks_with_the_ceiling():
    settings = SearchSettings(start=100, add=100, step_s=5, bound_s=40, slo_ms=100, ceiling_s=10)
    search, *_ = simulate(Model(capacity=1e4, target_us=1.0), settings)
    assert search.entries[-2]["stage"] == "ceiling" and "time bound" in search.why_stopped
    assert search.entries[-1]["at"] - search.begin_at <= 40


def test_after_a_step_that_broke_the_swarm_settles_for_about_its_p99_before_the_next():
    settings = SearchSettings(start=1000, add=1000, step_s=5, bound_s=60, slo_ms=100, ceiling_s=5)
    search = Search(settings, 1000)
    search.next(step(1000))  # held: the ramp goes on with no pause
    assert [e["stage"] for e in search.entries] == ["ramp", "ramp"]
    search.next(step(2000, target_cpu=0.97, p99=2400.0))  # broke, its queue 2.4 s deep
    settle, refine = search.entries[-2:]
    assert settle["stage"] == "settle" and settle["rate"] == 0 and settle["seconds"] == 3
    assert settle["at"] == 1010 and refine["stage"] == "refine" and refine["at"] == 1013
    search.next(step(1250, p99=40.0))  # held: the next refinement follows at once
    assert search.entries[-1]["stage"] == "refine" and search.entries[-1]["at"] == 1018
    search.next(step(1500, p99=90_000.0, achieved=900))  # broke deeply: a settle is at most one step
    assert search.entries[-2]["seconds"] == 5
    # the settling seconds belong to no step
    ends = search.ends_at
    steps = cut_steps(
        search.entries,
        _seconds(1000, ends, 50),
        [],
        segment="w1",
        workers=1,
        target_cores=None,
        machine_cores=2,
        origin=0.0,
    )
    measured = {s for st in steps for s in range(int(st["start"]), int(st["end"]))}
    assert measured == set(range(1000, search.current["at"])) - {1010, 1011, 1012} - set(range(1023, 1028))


def test_a_settle_that_would_cost_the_ceiling_shortens_to_what_the_bound_leaves():
    settings = SearchSettings(start=1000, add=1000, step_s=3, bound_s=16, slo_ms=100, ceiling_s=3, refine_steps=1)
    search = Search(settings, 0)
    search.next(step(1000))  # held
    search.next(step(2000, target_cpu=0.97, p99=2400.0))  # broke: 3 s settle, then one refinement at 1500
    assert [e["stage"] for e in search.entries] == ["ramp", "ramp", "settle", "refine"]
    search.next(step(1500, target_cpu=0.97, p99=2400.0))  # broke too: a full settle would leave no ceiling
    settle, ceiling = search.entries[-2:]
    assert settle["stage"] == "settle" and settle["at"] == 12 and settle["seconds"] == 1  # of the 3 it was owed
    assert ceiling["stage"] == "ceiling" and ceiling["at"] == 13
    assert search.next(step(None, achieved=1700, stage="ceiling"))["stop"] and search.current["at"] == 16


def test_slots_never_shrink_and_the_ceiling_has_its_own():
    search, *_ = simulate(Model(capacity=1800), SearchSettings(slo_ms=100, ceiling_slots=64))
    users = [e["users"] for e in search.entries if not e.get("stop")]
    assert users == sorted(users) and search.entries[-2]["users"] >= 64


# -- scaling and references ------------------------------------------------------------------------------------
def test_scaling_fits_hub_limited_points_only_and_otherwise_says_which_run_gives_them():
    truth = USL(gamma=1800.0, alpha=0.05, beta=0.001)
    points = {n: float(truth.throughput(n)) for n in (1, 2, 3, 4)}
    fitted = analysis.scaling(points, cores=8)
    assert fitted.usl is not None and fitted.usl.gamma == pytest.approx(1800.0, rel=0.01)
    few = analysis.scaling({1: 1800.0}, cores=2)
    assert few.usl is None and "--workers 1,2,3" in few.note


def test_cores_and_cloud_references():
    assert analysis.cores_needed(3000.0, 1000.0, None) == 3
    assert analysis.cores_needed(0.0, 1000.0, None) == 0
    refs = {r["service"]: r for r in analysis.cloud_references(2000.0)}
    assert refs["Azure IoT Hub S2"]["units"] == math.ceil(2000 / 120) and refs["Azure IoT Hub S2"]["possible"]
    assert not refs["AWS IoT Core (default quota)"]["possible"] and refs["AWS IoT Core (raised quota)"]["possible"]
