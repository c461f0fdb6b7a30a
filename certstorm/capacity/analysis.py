"""From what a run measured to the answers the report gives: steps, whether each held, the saturation knee,
which side saturated, hub CPU per authentication, the USL fit and the sizing projections.

Everything here is a pure function of plain data, so the report can be rebuilt from a run's raw files at any
time (``certstorm report``) and tested without a run.

A *sample* is one second of a segment (one hub lifetime, ``segment`` = ``"w<workers>"`` or ``"storm"``)::

    {"t": seconds since the run began, "wall": epoch, "segment", "workers",
     "ok_rate": admitted/s, "error_rate": refused/s,          # from the hub's /metrics
     "hub_cpu": fraction of the hub's cores busy, "gen_cpu": fraction of the generator's core busy,
     "machine_cpu": fraction of all the machine's cores busy (other work included),
     "ok", "errors", "hub_cpu_s", "gen_cpu_s": the cumulative values those rates come from}

A *step* is one constant target rate of a ramp or a refinement (see :func:`steps_from_swarm`)::

    {"workers", "stage": "ramp"|"refine", "target", "start", "end", "achieved", "error_rate", "hub_cpu",
     "gen_cpu", "machine_cpu", "hub_us_per_auth", "gen_us_per_auth", "count", "p50", "p90", "p99", "p999"}

``machine_cpu`` is every process on the machine as a fraction of all its cores; latencies are in ms, from
the swarm's µs histogram of that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from certstorm.capacity.planner import USL, fit_usl

CPU_LIMIT = 0.85  # a process busier than this is saturated (the CONNBURST rule)
ERROR_LIMIT = 0.001  # at most 0.1% failed authentications at the knee
BEHIND = 0.9  # a step delivering less than 90% of its target rate has fallen behind

# Cloud reference points (new device connections per second); see the README.
AZURE_TIERS = {  # name: (per-unit rate, minimum rate for the first unit, max units)
    "S1": (12.0, 100.0, 200),
    "S2": (120.0, 120.0, 200),
    "S3": (6000.0, 6000.0, 10),
}
AWS_CONNECT_DEFAULT = 500.0  # connect requests per second per account, default
AWS_CONNECT_RAISED = 3000.0  # commonly granted after a quota increase


def _reasons(
    achieved: float,
    target: float,
    error_share: float,
    hub_cpu: float,
    gen_cpu: float,
    p99_ms: float | None,
    slo_ms: float,
) -> list[str]:
    out = []
    if hub_cpu >= CPU_LIMIT:
        out.append(f"hub CPU {hub_cpu:.0%}")
    if gen_cpu >= CPU_LIMIT:
        out.append(f"generator CPU {gen_cpu:.0%}")
    if p99_ms is not None and p99_ms > slo_ms:
        out.append(f"p99 {p99_ms:,.0f} ms > {slo_ms:g} ms")
    if error_share > ERROR_LIMIT:
        out.append(f"errors {error_share:.2%}")
    if achieved < BEHIND * target:
        out.append(f"admitted {achieved:,.0f}/s of {target:,.0f}/s")
    return out


def live_break(rows: list[dict], target: float) -> str:
    """Why the last seconds' samples break the step (empty when they hold): what a run can see live, before
    the swarm's latency histograms exist. Averages over the rows, so one noisy second does not stop a step."""
    n = len(rows)
    ok = sum(r["ok_rate"] for r in rows) / n
    err = sum(r["error_rate"] for r in rows) / n
    reasons = _reasons(
        ok,
        target,
        err / (ok + err) if ok + err else 0.0,
        sum(r["hub_cpu"] for r in rows) / n,
        sum(r["gen_cpu"] for r in rows) / n,
        None,
        math.inf,
    )
    return ", ".join(reasons)


def reasons(step: dict, slo_ms: float) -> list[str]:
    """Why a measured step does not hold; empty when it does."""
    out = _reasons(
        step["achieved"], step["target"], step["error_rate"], step["hub_cpu"], step["gen_cpu"], step["p99"], slo_ms
    )
    if step["p99"] is None:
        out.append("no authentication completed")
    return out


def holds(step: dict, slo_ms: float) -> bool:
    return step["achieved"] > 0 and not reasons(step, slo_ms)


def first_break(steps: list[dict], slo_ms: float) -> dict | None:
    """The earliest step that does not hold, with its reasons."""
    for s in sorted(steps, key=lambda s: s["start"]):
        why = reasons(s, slo_ms)
        if why:
            return dict(s, reasons=why)
    return None


def steps_from_swarm(
    swarm: dict, samples: list[dict], workers: int, stage: str, hub_cores: float, machine_cores: int
) -> list[dict]:
    """One step per phase of a swarm step run: rates and CPU from the run's own samples inside the phase
    (its first second skipped as the ramp into it), latency from the swarm's histogram of that phase."""
    run = swarm.get("run", {})
    t0, ended = run.get("t0"), run.get("duration_s")
    rows = {r["phase"]: r for r in swarm.get("rates", {}).get("phases", [])}
    out = []
    if t0 is None:
        return out
    for ph in swarm.get("phases", []):
        lo = t0 + ph["start"] + 1.0
        hi = t0 + min(ph["end"], ended if ended is not None else ph["end"])
        inside = [s for s in samples if lo <= s["wall"] <= hi + 0.5]
        if len(inside) < 2 or inside[-1]["wall"] - inside[0]["wall"] < 1.5:
            continue
        a, b = inside[0], inside[-1]
        dt = b["wall"] - a["wall"]
        ok, err = b["ok"] - a["ok"], b["errors"] - a["errors"]
        # what the hub's CPU per authentication is of: first connections cost a full device judgement and a
        # registry insert, reconnects (the device cache) a hash, a lookup and the proof
        again = b.get("reconnects", 0.0) - a.get("reconnects", 0.0)
        hub_s, gen_s = b["hub_cpu_s"] - a["hub_cpu_s"], b["gen_cpu_s"] - a["gen_cpu_s"]
        machine = (b["machine_cpu_s"] - a["machine_cpu_s"]) / dt / machine_cores if "machine_cpu_s" in a else None
        row = rows.get(ph["phase"], {})
        failed = row.get("failed_rate") or 0.0
        swarm_share = failed / (failed + row["achieved_rate"]) if row.get("achieved_rate") else 0.0
        count = row.get("auth_count", 0)

        def ms(key, row=row, count=count):
            return row[key] / 1000.0 if count and row.get(key) is not None else None

        out.append(
            {
                "workers": workers,
                "stage": stage,
                "target": float(ph["rate"]),
                "start": a["t"],
                "end": b["t"],
                "achieved": ok / dt,
                "error_rate": max(err / (ok + err) if ok + err else 0.0, swarm_share),
                "hub_cpu": hub_s / dt / hub_cores,
                "gen_cpu": gen_s / dt,
                "machine_cpu": machine,
                "hub_us_per_auth": hub_s / ok * 1e6 if ok else None,
                "gen_us_per_auth": gen_s / ok * 1e6 if ok else None,
                "reconnect_share": min(1.0, max(0.0, again / ok)) if ok else None,
                "count": count,
                "p50": ms("auth_p50_us"),
                "p90": ms("auth_p90_us"),
                "p99": ms("auth_p99_us"),
                "p999": ms("auth_p999_us"),
            }
        )
    return out


def knee(steps: list[dict], slo_ms: float, workers: int | None = None) -> dict | None:
    """The step with the highest admitted rate that holds: p99 within the SLO, errors <= 0.1%, neither side at
    85% CPU, at least 90% of its target delivered."""
    good = [s for s in steps if holds(s, slo_ms) and (workers is None or s["workers"] == workers)]
    return max(good, key=lambda s: s["achieved"]) if good else None


def side_of(broken: dict | None) -> str:
    """Which side a broken step saturated: 'hub', 'generator', 'neither' (it broke with both below 85%), or
    'not-found' (nothing broke)."""
    if broken is None:
        return "not-found"
    if broken["hub_cpu"] >= CPU_LIMIT and broken["hub_cpu"] >= broken["gen_cpu"]:
        return "hub"
    if broken["gen_cpu"] >= CPU_LIMIT:
        return "generator"
    if broken["hub_cpu"] >= CPU_LIMIT:
        return "hub"
    return "neither"


def verdicts(steps: list[dict], searches: list[dict], slo_ms: float) -> list[dict]:
    """Per worker count: the side that saturated, the step that broke, the knee."""
    out = []
    for search in searches:
        w = search["workers"]
        ws = [s for s in steps if s["workers"] == w]
        # the run records the break it acted on (a rate that broke once and held when tried again does not
        # count); older runs did not, so find the first break
        broken = (
            search.get("broke")
            if "broke" in search
            else first_break([s for s in ws if s["stage"] == "refine"], slo_ms) or first_break(ws, slo_ms)
        )
        if broken is not None:
            broken = dict(broken, reasons=reasons(broken, slo_ms))
        out.append(
            {
                "workers": w,
                "side": side_of(broken),
                "broke": broken,
                "knee": knee(ws, slo_ms),
                "seconds": search.get("seconds"),
                "bound_s": search.get("bound_s"),
                "highest_target": max((s["target"] for s in ws), default=None),
            }
        )
    return out


def overall_side(per_workers: list[dict]) -> str:
    sides = [v["side"] for v in per_workers]
    for side in ("hub", "generator", "neither"):
        if side in sides:
            return side
    return "not-found"


def hub_capacity_points(per_workers: list[dict]) -> dict[int, float]:
    """Knee rate per worker count, for the counts whose search ended with the hub saturated only."""
    return {v["workers"]: v["knee"]["achieved"] for v in per_workers if v["side"] == "hub" and v["knee"]}


@dataclass
class Scaling:
    points: dict[int, float]
    usl: USL | None
    note: str
    predicted_from_fewer: dict | None  # {"workers", "predicted", "measured", "error"}


def scaling(points: dict[int, float], cores: int) -> Scaling:
    """USL fit over hub-limited points only; with too few, say which run would give them instead of
    drawing a line."""
    counts = sorted(points)
    usl = None
    if len(counts) >= 3 and 1 in points:
        try:
            usl = fit_usl(counts, [points[c] for c in counts])
            note = f"USL fit over {len(counts)} hub-limited worker counts"
        except ValueError as exc:
            note = f"no USL fit: {exc}"
    else:
        note = (
            f"no USL fit: {len(counts)} hub-limited worker count(s) measured; a fit needs the 1-worker knee "
            f"and two more. With {cores} core(s) here the generator takes one, so run the swarm on other hosts "
            "(locust -f loadgen --master here, --worker on each other host; or certstorm run on a machine with "
            "at least 4 cores) so that --workers 1,2,3 each saturate the hub"
        )
    check = None
    if len(counts) >= 2:
        fewer = counts[:-1]
        if usl is not None and len(fewer) >= 3:
            predicted = float(fit_usl(fewer, [points[c] for c in fewer]).throughput(counts[-1]))
        else:
            predicted = points[fewer[-1]] / fewer[-1] * counts[-1]
        measured = points[counts[-1]]
        check = {"workers": counts[-1], "predicted": predicted, "measured": measured, "error": predicted / measured - 1}
    return Scaling(points, usl, note, check)


def cores_needed(rate: float, per_core: float, usl: USL | None) -> int | None:
    if rate <= 0:
        return 0
    if usl is not None:
        return usl.workers_for(rate)
    return math.ceil(rate / per_core) if per_core > 0 else None


def cloud_references(rate: float) -> list[dict]:
    """How the same admission rate maps onto managed services' published connection throttles."""
    out = []
    for tier, (per_unit, first, max_units) in AZURE_TIERS.items():
        units = 1 if rate <= first else math.ceil(rate / per_unit)
        out.append(
            {
                "service": f"Azure IoT Hub {tier}",
                "units": units,
                "possible": units <= max_units,
                "note": f"{per_unit:g}/s per unit, at most {max_units} units",
            }
        )
    for label, cap in (
        ("AWS IoT Core (default quota)", AWS_CONNECT_DEFAULT),
        ("AWS IoT Core (raised quota)", AWS_CONNECT_RAISED),
    ):
        out.append(
            {"service": label, "units": None, "possible": rate <= cap, "note": f"{cap:g} connects/s per account"}
        )
    return out


__all__ = [
    "AWS_CONNECT_DEFAULT",
    "AWS_CONNECT_RAISED",
    "AZURE_TIERS",
    "BEHIND",
    "CPU_LIMIT",
    "ERROR_LIMIT",
    "Scaling",
    "cloud_references",
    "cores_needed",
    "first_break",
    "holds",
    "hub_capacity_points",
    "knee",
    "live_break",
    "overall_side",
    "reasons",
    "scaling",
    "side_of",
    "steps_from_swarm",
    "verdicts",
]
