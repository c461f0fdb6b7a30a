"""From the steps a run measured to the answers the report gives: whether each step held, the knee, which
side saturated, the cost per authentication as a slope, the ceiling, the USL fit and the sizing
projections. Steps are cut from the run's seconds by :mod:`certstorm.capacity.windows`.

Everything here is a pure function of plain data, so the report can be rebuilt from a run's raw files at
any time (``certstorm report``) and tested without a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from certstorm.capacity.planner import USL, fit_usl

CPU_LIMIT = 0.85  # a process busier than this is saturated (the CONNBURST rule)
ERROR_LIMIT = 0.001  # at most 0.1% failed authentications at the knee
BEHIND = 0.9  # a step delivering less than 90% of its target rate has fallen behind
RECONNECTS = 0.5  # a step with at least this share of reconnects measures reconnects, not first connections
NOISE_SIGMAS = 2.0  # ... by more than this many standard deviations of its Poisson arrival count

# Cloud reference points (new device connections per second); see the README.
AZURE_TIERS = {  # name: (per-unit rate, minimum rate for the first unit, max units)
    "S1": (12.0, 100.0, 200),
    "S2": (120.0, 120.0, 200),
    "S3": (6000.0, 6000.0, 10),
}
AWS_CONNECT_DEFAULT = 500.0  # connect requests per second per account, default
AWS_CONNECT_RAISED = 3000.0  # commonly granted after a quota increase


def behind(achieved: float, target: float, seconds: float) -> bool:
    """Fewer admitted than 90% of the target rate, by more than the arrivals' counting noise explains: the
    swarm draws Poisson arrivals, so at 60/s one second's count is 60 ± 8 and a 10% shortfall is often the
    draw, not the system. Above 400 expected arrivals the 90% rule alone decides."""
    expected = target * seconds
    return achieved * seconds < min(BEHIND * expected, expected - NOISE_SIGMAS * math.sqrt(expected))


def _reasons(
    achieved: float,
    target: float | None,
    seconds: float,
    error_share: float,
    target_cpu: float | None,
    gen_cpu: float,
    p99_ms: float | None,
    slo_ms: float,
) -> list[str]:
    out = []
    if target_cpu is not None and target_cpu >= CPU_LIMIT:
        out.append(f"target CPU {target_cpu:.0%}")
    if gen_cpu >= CPU_LIMIT:
        out.append(f"generator CPU {gen_cpu:.0%}")
    if p99_ms is not None and p99_ms > slo_ms:
        out.append(f"p99 {p99_ms:,.0f} ms > {slo_ms:g} ms")
    if error_share > ERROR_LIMIT:
        out.append(f"errors {error_share:.2%}")
    if target is not None and behind(achieved, target, seconds):
        out.append(f"admitted {achieved:,.0f}/s of {target:,.0f}/s")
    return out


def reasons(step: dict, slo_ms: float) -> list[str]:
    """Why a measured step does not hold; empty when it does."""
    out = _reasons(
        step["achieved"],
        step["target"],
        step["seconds"],
        step["error_rate"],
        step["target_cpu"],
        step["gen_cpu"],
        step["p99"],
        slo_ms,
    )
    if step["p99"] is None:
        out.append("no authentication completed")
    return out


def holds(step: dict, slo_ms: float) -> bool:
    return step["achieved"] > 0 and not reasons(step, slo_ms)


def paced(steps: list[dict]) -> list[dict]:
    """The steps at a scheduled rate (ramp and refinement), not the closed-loop ceiling."""
    return [s for s in steps if s["stage"] != "ceiling"]


def reconnects(step: dict) -> bool:
    """Whether most of a step's admissions were reconnects of devices the hub had admitted before (unknown
    counts as first connections)."""
    return (step.get("reconnect_share") or 0.0) >= RECONNECTS


def judged(steps: list[dict]) -> list[dict]:
    """The paced steps of one segment that measure the same work as its first: a fleet used up during the
    search turns the later steps into reconnects, which cost a hub less, so they neither make the knee nor
    the break of first connections (nor the cost slope); the report shows them apart."""
    ps = sorted(paced(steps), key=lambda s: s["start"])
    return [s for s in ps if reconnects(s) == reconnects(ps[0])]


def knee(steps: list[dict], slo_ms: float) -> dict | None:
    """The :func:`judged` step that holds with the highest *admitted* rate: p99 within the SLO, errors <= 0.1%,
    neither side at 85% CPU, not :func:`behind` its intended rate. A rate measured more than once
    counts only if it held every time (the search retries a step that broke with neither side busy)."""
    broken_rates = {s["target"] for s in judged(steps) if not holds(s, slo_ms)}
    good = [s for s in judged(steps) if holds(s, slo_ms) and s["target"] not in broken_rates]
    return max(good, key=lambda s: s["achieved"]) if good else None


def decisive_break(steps: list[dict], slo_ms: float) -> dict | None:
    """The paced step just above the knee that broke (the lowest intended rate among the broken steps
    above the knee's), with its reasons; None when every step held."""
    k = knee(steps, slo_ms)
    floor = k["target"] if k else -1.0
    broken = [s for s in judged(steps) if s["target"] > floor and reasons(s, slo_ms)]
    if not broken:
        return None
    step = min(broken, key=lambda s: (s["target"], s["start"]))
    return dict(step, reasons=reasons(step, slo_ms))


def side_of(broken: dict | None) -> str:
    """Which side a broken step saturated: 'target', 'generator', 'neither' (it broke with both below 85%
    or the target's CPU unknown), or 'not-found' (nothing broke)."""
    if broken is None:
        return "not-found"
    target, gen = broken["target_cpu"], broken["gen_cpu"]
    if target is not None and target >= CPU_LIMIT and target >= gen:
        return "target"
    if gen >= CPU_LIMIT:
        return "generator"
    if target is not None and target >= CPU_LIMIT:
        return "target"
    return "neither"


def ceiling(steps: list[dict]) -> dict | None:
    """The closed-loop step at saturation, if the run measured one of the work :func:`judged` steps do."""
    closed = [s for s in steps if s["stage"] == "ceiling" and s["achieved"] > 0]
    first = judged(steps)[:1]
    if not closed or (first and reconnects(closed[-1]) != reconnects(first[0])):
        return None
    return closed[-1]


def verdicts(steps: list[dict], segments: list[dict], slo_ms: float) -> list[dict]:
    """Per segment (a hub worker count, or the target): the side that saturated, the step that broke, the
    knee, the ceiling and the cost slopes."""
    out = []
    for segment in segments:
        ss = [s for s in steps if s["segment"] == segment["name"]]
        broke = decisive_break(ss, slo_ms)
        k = knee(ss, slo_ms)
        top = ceiling(ss)
        out.append(
            {
                **segment,
                "segment": segment["name"],
                "side": side_of(broke),
                "broke": broke,
                "knee": k,
                "ceiling": top,
                "knee_of_ceiling": k["achieved"] / top["achieved"] if k and top else None,
                "cost": cost_slope(ss, "target_cores_busy"),
                "generator_cost": cost_slope(ss, "gen_cores_busy"),
                "highest_target": max((s["target"] for s in paced(ss)), default=None),
            }
        )
    return out


def cost_slope(steps: list[dict], key: str) -> dict | None:
    """``key`` (cores busy) against admitted rate over the :func:`judged` steps, fitted as ``cores = fixed + slope x
    rate``: the marginal CPU per authentication in µs, the fixed part in cores and R²; None with fewer than
    three steps at two rates or more, or where the CPU is unknown."""
    points = [(s["achieved"], s[key]) for s in judged(steps) if s["achieved"] > 0 and s.get(key) is not None]
    if len(points) < 3 or len({round(x) for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    fixed = my - slope * mx
    syy = sum((y - my) ** 2 for _, y in points)
    r2 = 1.0 - sum((y - fixed - slope * x) ** 2 for x, y in points) / syy if syy > 0 else 1.0
    return {"slope_us": slope * 1e6, "fixed_cores": fixed, "r2": r2, "steps": n}


def cores_for(rate: float, cost: dict) -> float:
    """Cores busy at ``rate`` by the fitted cost: the fixed part plus the slope."""
    return cost["fixed_cores"] + cost["slope_us"] * 1e-6 * rate


def overall_side(per_segment: list[dict]) -> str:
    sides = [v["side"] for v in per_segment]
    for side in ("target", "generator", "neither"):
        if side in sides:
            return side
    return "not-found"


def hub_capacity_points(per_segment: list[dict]) -> dict[int, float]:
    """Knee rate per hub worker count, for the counts whose search ended with the hub saturated only."""
    return {
        v["workers"]: v["knee"]["achieved"] for v in per_segment if v["workers"] and v["side"] == "target" and v["knee"]
    }


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
    "NOISE_SIGMAS",
    "RECONNECTS",
    "Scaling",
    "behind",
    "ceiling",
    "cloud_references",
    "cores_for",
    "cores_needed",
    "cost_slope",
    "decisive_break",
    "holds",
    "hub_capacity_points",
    "judged",
    "knee",
    "overall_side",
    "paced",
    "reasons",
    "reconnects",
    "scaling",
    "side_of",
    "verdicts",
]
