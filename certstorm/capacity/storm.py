"""The run's reconnect storm: every device at once, against a throttled hub the run starts or against the
target, until every one is admitted or twice the simulated time to admit them (at least 20 s, at most
``--storm-timeout``)."""

from __future__ import annotations

import subprocess

from certstorm.capacity.planner import simulate_storm
from certstorm.processes import newest_summary, start_swarm, stop_swarm
from devicekit.backoff import preset

__all__ = ["run_storm"]


def run_storm(run, hub, expected_rate: float | None) -> dict | None:
    """Run the storm for ``run`` (a :class:`certstorm.capacity.run.Run`) against ``hub`` or its target;
    the record ``storm.json`` keeps, or None when nobody was admitted."""
    a = run.args
    backoff = preset(a.backoff).vectorized()
    quota = a.storm_quota if hub is not None else 0.0
    capacity = quota or expected_rate or 1000.0
    sims = [
        simulate_storm(a.storm_devices, capacity, backoff, attempt_rate=r, horizon=a.storm_timeout * 2)
        for r in (None, expected_rate)
    ]
    simulated = max(s.time_to_admit for s in sims)
    bound = min(a.storm_timeout, max(20.0, 2 * simulated))
    limit = f"hub quota {quota:g}/s" if quota else f"the target's own pace (knee {capacity:,.0f}/s)"
    run.say(
        f"reconnect storm: {a.storm_devices:,} devices at once, backoff {a.backoff}, {limit}; simulated time to "
        f"admit all {simulated:.1f} s, so run until all are admitted or {bound:.0f} s"
    )
    swarm_dir = run.raw / "storm-swarm"
    proc = start_swarm(
        [
            *run.target_args(hub),
            *run.fleet_args(),
            "--shape",
            "storm",
            "--storm-devices",
            str(a.storm_devices),
            "--backoff",
            a.backoff,
            "-t",
            f"{bound:.0f}s",
            "--results-dir",
            str(swarm_dir),
            "--csv",
            str(run.raw / "storm"),
        ],
        run.raw / "storm.log",
    )
    try:
        proc.wait(bound + 40)
    except subprocess.TimeoutExpired:
        run.say("  the swarm did not end in time; stopping it")
    finally:
        stop_swarm(proc)
    summary = newest_summary(swarm_dir)
    curve = (summary or {}).get("admission_curve")
    if not curve:
        run.say("  the storm admitted nobody or wrote no summary")
        return None
    step = curve.get("bucket_s", 0.1)
    pts = [[round((i + 1) * step, 3), c] for i, c in enumerate(curve["admitted_cumulative"])]
    busy = sorted(x for x in curve.get("attempts", []) if x > 0)
    # The swarm's connection slots cap its attempts per second; the simulation must know that cap
    # (real devices have none). The 95th percentile of busy buckets is its sustained rate.
    attempt_rate = busy[int(0.95 * (len(busy) - 1))] / step if busy else None
    admitted = pts[-1][1] if pts else 0
    run.say(f"  admitted {admitted:,} of {a.storm_devices:,} in {pts[-1][0] if pts else 0:.1f} s")
    return {
        "devices": curve.get("devices", a.storm_devices),
        "capacity": quota or None,
        "backoff": a.backoff,
        "curve": pts,
        "retries": int(sum(curve.get("refused", []))),
        "attempt_rate": attempt_rate,
        "bound_s": bound,
        "simulated_before_s": simulated,
        "failures_by_code": summary["authentications"]["failures_by_code"],
    }
