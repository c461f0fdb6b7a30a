"""Swarm schedules, device partitioning, histograms and the device queue, without sockets or Locust."""

import itertools
import random
from types import SimpleNamespace

import numpy as np
import pytest

from devicekit.fleet import cache_key
from loadgen import (
    EXACT,
    MAX_US,
    N_BUCKETS,
    SPAWN_AHEAD,
    DeviceQueue,
    Histogram,
    Pacer,
    Partition,
    Plan,
    Recorder,
    Schedule,
    bucket_bounds,
    bucket_index,
    build_shape,
    merge_reports,
    slots_for,
)


def ticks(shape, until, done_at=None, step=0.5):
    out, t = [], 0.0
    while t <= until:
        out.append((t, shape.tick(t, done=done_at is not None and t >= done_at)))
        t += step
    return out


def options(**kw):
    base = {
        "shape": "closed",
        "run_time": None,
        "num_users": 4,
        "spawn_rate": 2.0,
        "rate": 100.0,
        "latency_budget": 0.05,
        "slots": 0,
        "step_rate": 50.0,
        "step_seconds": 10.0,
        "steps": 3,
        "storm_devices": 1000,
        "churn_devices": 200,
        "churn_stay": 5.0,
        "churn_away": 5.0,
    }
    base.update(kw)
    return SimpleNamespace(**base)


# --- shapes -----------------------------------------------------------------------------------------------
def test_closed_uses_locust_options_and_stops_at_run_time_or_when_done():
    s = build_shape(options(run_time=3))
    assert s.tick(0) == Plan(4, 2.0) and s.tick(2.99) == Plan(4, 2.0)
    assert s.tick(3.0) is None
    assert build_shape(options()).tick(1e6) is not None  # no -t: runs until stopped
    assert build_shape(options()).tick(5, done=True) is None  # passes used up


def test_steady_holds_rate_and_sizes_slots_by_littles_law():
    s = build_shape(options(shape="steady", rate=1000.0, run_time=10, latency_budget=0.05))
    plan = s.tick(0)
    assert plan.rate == 1000.0 and plan.users == 50 and plan.spawn_rate == 50.0
    assert all(p == plan for t, p in ticks(s, 9.5))
    assert s.tick(10) is None
    assert build_shape(options(shape="steady", slots=7, run_time=1)).tick(0).users == 7
    assert slots_for(0.5, 0.05) == 1


def test_step_climbs_stairs_then_stops():
    s = build_shape(options(shape="step", rate=100.0, step_rate=50.0, step_seconds=10.0, steps=3))
    got = [(t, p.rate, p.phase) for t, p in ticks(s, 29.5, step=5.0)]
    assert got == [
        (0.0, 100.0, 0),
        (5.0, 100.0, 0),
        (10.0, 150.0, 1),
        (15.0, 150.0, 1),
        (20.0, 200.0, 2),
        (25.0, 200.0, 2),
    ]
    users = [s.tick(t).users for t in (0, 10, 20)]
    assert users == sorted(users) and users[-1] == 10  # 200/s x 0.05 s
    assert s.tick(30.0) is None
    assert [p["rate"] for p in s.phases()] == [100.0, 150.0, 200.0]


def test_storm_runs_until_every_device_is_settled_or_timeout():
    s = build_shape(options(shape="storm", storm_devices=1000, run_time=60))
    assert s.tick(0) == Plan(100, 100.0)
    assert s.tick(30) is not None and s.tick(30, done=True) is None and s.tick(60) is None
    assert build_shape(options(shape="storm", storm_devices=20)).tick(0).users == 20


def test_churn_keeps_its_slots_for_its_duration():
    s = build_shape(options(shape="churn", run_time=8))
    assert {p for _, p in ticks(s, 7.5)} == {Plan(50, 50.0)}
    assert s.tick(8) is None


def test_bad_parameters_and_unknown_shapes_are_refused():
    with pytest.raises(ValueError):
        build_shape(options(shape="steady", rate=0.0))
    with pytest.raises(ValueError):
        build_shape(options(shape="step", steps=0))
    with pytest.raises(ValueError):
        build_shape(options(shape="zigzag"))


# --- partitions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride,limit", [(1, 10), (2, 11), (3, 100), (7, 5)])
def test_partitions_cover_each_device_once_per_pass(stride, limit):
    seen = []
    for w in range(stride):
        p = Partition(w, stride, limit)
        seen += [p.device(k)[0] for k in range(p.size)]
        if p.size:
            assert p.device(p.size) == (w, 1)  # the second pass starts again
    assert sorted(seen) == list(range(limit))


def test_partition_refuses_nonsense_and_cache_keys_separate_fleets():
    with pytest.raises(ValueError):
        Partition(2, 2, 10)
    assert cache_key("s", 10, "p256", 2) == cache_key("s", 10, "p256", 2)
    assert (
        len(
            {
                cache_key("s", 10, "p256", 2),
                cache_key("t", 10, "p256", 2),
                cache_key("s", 11, "p256", 2),
                cache_key("s", 10, "p384", 2),
                cache_key(None, 10, "p256", 2, "123"),
            }
        )
        == 5
    )


# --- histograms -------------------------------------------------------------------------------------------
def test_histogram_buckets_are_exact_below_1024_us_and_within_0_2_percent_above():
    values = np.array([0, 1, 1023, 1024, 1025, 2047, 2048, 99_999, 10**9, MAX_US])
    idx = bucket_index(values)
    assert list(idx[:3]) == [0, 1, 1023] and idx[-1] == N_BUCKETS - 1
    for v, i in zip(values, idx):
        lo, hi = bucket_bounds(int(i))
        assert (lo <= v < hi and (hi - lo) / max(lo, 1) <= 1 / 512 + 1e-12) or v < EXACT
    assert bucket_index([MAX_US * 10])[0] == N_BUCKETS - 1  # clamped


def test_histograms_merge_exactly_and_percentiles_are_of_all_values():
    rng = np.random.default_rng(1)
    a_vals, b_vals = rng.integers(10, 500, 5000), rng.integers(5000, 9000, 5000)
    a, b = Histogram(), Histogram()
    for v in a_vals:
        a.record(v)
    b.record_many(b_vals)
    both = Histogram.from_dict(a.to_dict()).merge(Histogram.from_dict(b.to_dict()))
    allv = np.concatenate([a_vals, b_vals])
    assert both.count == 10000 and both.total == int(allv.sum())
    assert both.min == allv.min() and both.max == allv.max()
    for q in (10, 50, 90, 99):
        assert both.percentile(q) == pytest.approx(np.percentile(allv, q, method="inverted_cdf"), rel=0.01, abs=1)
    assert Histogram().summary() == {"count": 0}


# --- device queue and report merging ----------------------------------------------------------------------
def test_device_queue_releases_devices_when_due():
    q = DeviceQueue(range(5), start=100.0, spread=2.0, rng=random.Random(1))
    assert q.pop_due(99.0) is None
    got = []
    while (item := q.pop_due(200.0)) is not None:
        got.append(item[2])
        q.settle()
    assert sorted(got) == list(range(5)) and q.finished
    q.push(300.0, 3, 1, 100.0, 1.0)
    assert not q.finished and q.next_due() == 300.0


def test_device_queue_without_spread_serves_fresh_devices_before_retries():
    q = DeviceQueue(range(3), start=10.0)
    assert len(q) == 3 and q.heap == [] and q.next_due() == 10.0 and q.pop_due(9.9) is None
    first = q.pop_due(10.0)
    assert first[2] == 0 and first[3] == 0
    q.push(11.0, 0, 1, 10.0, 1.0)  # refused: retry later
    q.settle()
    assert [q.pop_due(12.0)[2] for _ in range(3)] == [1, 2, 0]
    for _ in range(3):
        q.settle()
    assert q.finished and len(q) == 0


def test_reports_merge_counts_devices_and_detect_duplicates():
    def report(devices, passes=0):
        r = Recorder(10, t0=1000.0)
        for d in devices:
            r.admit(d, passes)
            r.counts["admitted"] += 1
            r.second(1000.5)[1] += 1
            r.hist["auth"].record(1000 + d)
        r.cpu.start()
        return r.to_dict()

    meta = {"fleet": {"count": 10}, "run": {"t0": 1000.0}, "phases": []}
    ok, _ = merge_reports({0: report([0, 2, 4]), 1: report([1, 3, 5])}, meta)
    assert ok["devices"] == {
        "distinct_admitted": 6,
        "first_pass_admissions": 6,
        "duplicates_within_a_pass": 0,
        "all_distinct": True,
    }
    assert ok["latency_us"]["auth"]["count"] == 6 and ok["authentications"]["admitted"] == 6
    bad, _ = merge_reports({0: report([0, 2]), 1: report([2, 3])}, meta)
    assert bad["devices"]["duplicates_within_a_pass"] == 1 and not bad["devices"]["all_distinct"]


# -- the follow shape: rates a runner sets while the run goes on ------------------------------------------------
def test_the_pacer_holds_a_rate_and_changes_it_in_place():
    import gevent

    pacer = Pacer(poisson=False)
    due: list[float] = []

    def slot():
        while True:
            t = pacer.take(lambda: False)
            if t is None:
                return
            due.append(t)

    pacer.set_rate(200.0)
    workers = [gevent.spawn(slot) for _ in range(4)]
    gevent.sleep(0.5)
    first = len(due)
    pacer.set_rate(1000.0)
    gevent.sleep(0.5)
    second = len(due) - first
    pacer.set_rate(None)  # the closed model: no pacing at all
    gevent.joinall(workers, timeout=2)
    assert all(w.dead for w in workers)
    assert 80 <= first <= 110 and 450 <= second <= 520, (first, second)
    after = sorted(due[first:])  # a stalled process wakes its slots in any order; the due times are the schedule
    gaps = [b - a for a, b in itertools.pairwise(after[5:51])]
    assert max(gaps) < 0.0011  # 1,000/s from the moment it was set, not after the old 5 ms gaps ran out


def test_a_process_paces_its_share_whichever_it_hears_first_the_rate_or_the_share():
    early = Pacer(poisson=False)
    early.pace(600.0)  # the master's first rate, before the run's plan reached this worker
    assert early.rate == 600.0
    early.set_share(1 / 6)  # the plan: six processes share the rate
    assert early.rate == pytest.approx(100.0)
    late = Pacer(poisson=False)
    late.set_share(1 / 6)
    assert late.rate == 0.0  # no rate given yet: it idles
    late.pace(600.0)
    assert late.rate == pytest.approx(100.0)
    late.pace(None)  # the closed model has no share
    assert late.rate is None
    late.pace(0.0)  # the stop
    late.set_share(1 / 3)
    assert late.rate == 0.0


def test_the_pacer_idles_at_zero_and_stops_when_asked():
    pacer = Pacer()
    assert pacer.take(lambda: True) is None
    pacer.set_rate(0.0)
    calls = iter([False, False, True])
    assert pacer.take(lambda: next(calls)) is None


def test_the_schedule_applies_each_entry_at_its_time_and_stops():
    import time

    import gevent

    schedule = Schedule()
    now = time.time()
    applied: list = []
    schedule.update(
        [
            {"at": now + 0.3, "rate": 200, "users": 5, "phase": 1},
            {"at": now + 0.1, "rate": 100, "users": 3, "phase": 0},
            {"at": now + 0.5, "stop": True},
        ]
    )
    assert [e["phase"] for e in schedule.entries[:2]] == [0, 1]  # kept in order of time
    done = gevent.spawn(
        schedule.apply,
        lambda *a: applied.append((round(time.time() - now, 1), *a)),
        lambda: applied.append((round(time.time() - now, 1), "stop")),
    )
    done.join(timeout=2)
    assert applied == [(0.1, 100, 3, 0), (0.3, 200, 5, 1), (0.5, "stop")]
    assert not schedule.update(list(schedule.entries))  # the same entries again change nothing


def test_the_follow_shape_starts_slots_ahead_and_ends_at_the_stop():
    clock = [100.0]
    entries = [
        {"at": 100, "rate": 100, "users": 10, "phase": 0},
        {"at": 105, "rate": None, "users": 40, "phase": 1},
        {"at": 110, "stop": True},
    ]
    shape = build_shape(options(shape="follow"), schedule=lambda: entries, clock=lambda: clock[0])
    plan = shape.tick(0)
    assert (plan.users, plan.rate, plan.phase) == (10, 100, 0)
    clock[0] = 105 - SPAWN_AHEAD + 0.1
    assert shape.tick(0).users == 40 and shape.tick(0).rate == 100  # slots first, the rate at its time
    clock[0] = 106
    assert shape.tick(0).rate is None
    clock[0] = 110
    assert shape.tick(0) is None
    with pytest.raises(ValueError, match="--schedule-file"):
        build_shape(options(shape="follow"))


def test_a_recorder_hands_out_each_ended_second_once_with_its_latencies():
    r = Recorder(10, t0=0.0)
    for second, n in ((1000, 3), (1002, 2)):
        for _ in range(n):
            r.second(second + 0.5)[0] += 1
            r.second(second + 0.5)[1] += 1
            r.second_latency.setdefault(second, []).append(1500.0)
    rows = r.ended_seconds(1002)
    assert [(x["second"], x["admitted"]) for x in rows] == [(1000, 3), (1001, 0)]
    assert rows[0]["lat"] == [[bucket_index(np.array([1500]))[0].item()], [3]] and rows[1]["lat"] is None
    assert [x["second"] for x in r.ended_seconds(1003)] == [1002] and r.ended_seconds(1003) == []


def test_the_runner_reads_the_live_file_as_it_grows(tmp_path):
    import json

    from certstorm.capacity.live import LiveLog

    path = tmp_path / "live.jsonl"
    log = LiveLog(path)
    log.read()  # not there yet
    lines = [
        {"kind": "hello", "worker": 0, "version": "1", "host": "a", "pid": 1, "t": 1.0},
        {"kind": "ready", "worker": 0, "devices": 5, "t": 2.0},
        {"kind": "ready", "worker": 1, "devices": 5, "t": 2.0},
        {
            "kind": "second",
            "worker": 0,
            "second": 10,
            "intended": 1,
            "admitted": 1,
            "failed": 0,
            "retries": 0,
            "cpu_s": 0.1,
            "lat": None,
        },
    ]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    path.write_text(text[:-20])  # the last line half written
    log.read()
    assert log.ready() == [0, 1] and log.seconds == {} and log.complete_until() == 0
    with open(path, "a") as fh:
        fh.write(text[-20:] + json.dumps(dict(lines[-1], worker=1)) + "\n")
        fh.write(json.dumps({"kind": "missing", "worker": 1, "t": 3.0}) + "\n")
    log.read()
    assert log.complete_until() == 11 and log.missing() == {1: 3.0} and log.ready() == [0]
