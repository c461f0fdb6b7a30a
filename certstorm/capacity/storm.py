"""The run's reconnect storm: every device at once, against a throttled hub the run starts or against the
target, until every one is admitted or twice the simulated time to admit them (at least 20 s, at most
``--storm-timeout``). With ``--device-profile`` and ``--network`` each device waits its signing time and
round trips (docs/profiles.md), and the run records what that makes the hub hold: attempts in flight on
both sides, second by second, and, over mutual TLS, the hub's memory per handshake left waiting for a
device."""

from __future__ import annotations

import math
import subprocess

from certstorm.capacity.handshakes import HubWatch, handshake_memory
from certstorm.capacity.planner import simulate_storm
from certstorm.processes import newest_summary, start_swarm, stop_swarm
from devicekit.backoff import preset
from devicekit.profiles import Profile

__all__ = ["MAX_SLOTS", "run_storm", "storm_slots"]

MIN_SLOTS, MAX_SLOTS = 100, 2000  # the swarm's storm default; about 20 MB of idle Locust users


def storm_slots(capacity: float, profile: Profile, transport: str) -> int:
    """Connection slots that keep attempting at twice the capacity while each attempt lasts what the profile
    adds (Little's law): slow devices need more slots, as a real fleet has a connection per device."""
    return int(min(MAX_SLOTS, max(MIN_SLOTS, math.ceil(2 * capacity * profile.attempt_seconds(transport)))))


def run_storm(run, hub, expected_rate: float | None) -> dict | None:
    """Run the storm for ``run`` (a :class:`certstorm.capacity.run.Run`) against ``hub`` or its target;
    the record ``storm.json`` keeps, or None when nobody was admitted."""
    a = run.args
    profile = Profile.parse(getattr(a, "device_profile", "software"), getattr(a, "network", "loopback"))
    transport = run.transport
    backoff = preset(a.backoff).vectorized()
    quota = a.storm_quota if hub is not None else 0.0
    capacity = quota or expected_rate or 1000.0
    sims = [
        simulate_storm(
            a.storm_devices, capacity, backoff, attempt_rate=r, horizon=a.storm_timeout * 2, profile=profile,
            transport=transport,
        )
        for r in (None, expected_rate)
    ]  # fmt: skip
    simulated = max(s.time_to_admit for s in sims)
    bound = min(a.storm_timeout, max(20.0, 2 * simulated))
    slots = getattr(a, "storm_slots", 0) or storm_slots(capacity, profile, transport)
    limit = f"hub quota {quota:g}/s" if quota else f"the target's own pace (knee {capacity:,.0f}/s)"
    run.say(
        f"reconnect storm: {a.storm_devices:,} devices at once, backoff {a.backoff}, {limit}, {profile.describe()} "
        f"({slots} connection slots); simulated time to admit all {simulated:.1f} s, so run until all are "
        f"admitted or {bound:.0f} s"
    )
    memory = None
    if hub is not None and transport == "mqtts":
        memory = handshake_memory(hub.host, hub.mqtts_port, hub.proc.pid)
        if memory:
            run.say(
                f"  the hub holds {memory['kib_per_handshake']:.0f} KiB per TLS handshake waiting for its device "
                f"(R² {memory['r2']:.3f} over {memory['points'][-1][0]} stalled handshakes)"
            )
    swarm_dir = run.raw / "storm-swarm"
    watch = HubWatch(hub.host, hub.port, hub.proc.pid) if hub is not None else None
    if watch is not None:
        watch.start()
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
            "--slots",
            str(slots),
            "--device-profile",
            getattr(a, "device_profile", "software"),
            "--network",
            getattr(a, "network", "loopback"),
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
        hub_samples = watch.stop() if watch is not None else []
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
    t0 = summary.get("run", {}).get("t0")
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
        "transport": transport,
        "profile": profile.to_json(),
        "slots": slots,
        "attempts": curve.get("attempts", []),
        "in_flight": summary.get("in_flight") or {},
        "hub": [{**row, "t": round(row["t"] - t0, 3)} for row in hub_samples if t0 is not None and row["t"] >= t0],
        "handshake_memory": memory,
    }
