"""``certstorm plan``: answer a sizing question from stored measurements, without a new run.

Two answers that must agree with each other: the cores for devices arriving evenly over the window, and the
cores that let all of them reconnecting at once (with the chosen SDK backoff) be admitted within the same
window -- found by simulating the storm at each core count -- or the statement that no core count can, and
what would.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from certstorm.capacity import analysis
from certstorm.capacity.planner import USL, simulate_storm
from certstorm.capacity.summary import strict
from devicekit.backoff import PRESETS, preset
from hubsim.argtypes import duration, integer

MAX_CORES = 4096


def _capacity(cores: int, per_core: float, usl: USL | None) -> float:
    return float(usl.throughput(cores)) if usl else cores * per_core


def storm_at(devices: int, capacity: float, backoff: str, latency: float, window_s: float):
    return simulate_storm(
        devices,
        capacity,
        preset(backoff).vectorized(),
        latency=latency,
        horizon=window_s * 1.02,
        dt=min(0.05, window_s / 200),
    )


def storm_cores(
    devices: int, window_s: float, backoff: str, per_core: float, usl: USL | None, latency: float, low: int
) -> tuple[int | None, object]:
    """Fewest cores (from ``low`` up to MAX_CORES, or the USL's peak) whose storm finishes within the window;
    (None, the simulation at the most) when none does."""
    high = MAX_CORES if usl is None or math.isinf(usl.peak_workers) else max(low, min(MAX_CORES, int(usl.peak_workers)))
    top = storm_at(devices, _capacity(high, per_core, usl), backoff, latency, window_s)
    if not math.isfinite(top.time_to_admit) or top.time_to_admit > window_s:
        return None, top
    best, sim = high, top
    while low < high:  # admission time falls as capacity grows: bisect on the core count
        mid = (low + high) // 2
        trial = storm_at(devices, _capacity(mid, per_core, usl), backoff, latency, window_s)
        if math.isfinite(trial.time_to_admit) and trial.time_to_admit <= window_s:
            best, sim, high = mid, trial, mid
        else:
            low = mid + 1
    return best, sim


def plan(devices: int, window_s: float, p99_ms: float, summary: dict, backoff: str = "azure-c") -> dict:
    knee = summary.get("knee")
    per_core = (summary.get("projection") or {}).get("per_core")
    if not knee or not per_core:
        raise ValueError("the stored run has no knee (no step held its SLO); run certstorm run again")
    note = ""
    if p99_ms < summary.get("slo_p99_ms", p99_ms):
        note = (
            f"the run's knee was found at p99 <= {summary['slo_p99_ms']:g} ms; a tighter {p99_ms:g} ms "
            "objective may need more cores than shown"
        )
    usl = USL(**summary["scaling"]["usl"]) if (summary.get("scaling") or {}).get("usl") else None
    rate = devices / window_s
    even = analysis.cores_needed(rate, per_core, usl)
    latency = (knee.get("p50") or 5.0) / 1000
    cores, sim = storm_cores(devices, window_s, backoff, per_core, usl, latency, max(1, even or 1))
    if cores is None:
        storm_answer = (
            f"no core count up to {MAX_CORES if usl is None else 'the USL peak'} admits all {devices:,} "
            f"devices reconnecting at once within {window_s:g} s with the {backoff} backoff: "
            f"its retry schedule bounds the storm, not the hub (at the most cores simulated, "
            f"{sim.admitted / devices:.1%} admitted in the window). What would: devices that spread "
            f"their reconnections over the window ({even} core(s) then), a backoff with full jitter "
            "(--backoff aws-crt), or a longer window"
        )
    else:
        storm_answer = (
            f"{cores} core(s) admit all {devices:,} reconnecting at once within {window_s:g} s with the "
            f"{backoff} backoff (simulated: all in {sim.time_to_admit:,.0f} s)"
        )
    return strict(
        {
            "devices": devices,
            "window_s": window_s,
            "p99_ms": p99_ms,
            "rate": rate,
            "per_core": per_core,
            "cores_even_arrival": even,
            "cores_storm": cores,
            "storm_possible": cores is not None,
            "storm_answer": storm_answer,
            "backoff": backoff,
            "note": note,
            "storm_time_to_admit": sim.time_to_admit if cores is not None else None,
            "storm_admitted_in_window": sim.admitted,
            "storm_time_to_99pct": sim.time_to_fraction(0.99),
            "peak_pending_challenges": sim.peak_pending_challenges,
            "retries": sim.refusals,
            "references": analysis.cloud_references(rate),
            "from_run": summary.get("run_id"),
        }
    )


def plan_command(args) -> int:
    source = Path(args.source)
    path = source / "summary.json" if source.is_dir() else source
    if not path.is_file():
        print(f"certstorm plan: error: argument --from: no measurements at {path}; run 'certstorm run' first")
        return 2
    try:
        summary = json.loads(path.read_text())
        out = plan(args.devices, args.window, args.p99 * 1000, summary, args.backoff)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"certstorm plan: error: argument --from: {path} cannot answer: {exc}")
        return 2
    if args.json:
        print(json.dumps(out, indent=1, allow_nan=False))
        return 0
    print(
        f"To admit {out['devices']:,} devices arriving evenly over {out['window_s']:g} s at p99 <= "
        f"{out['p99_ms']:g} ms ({out['rate']:,.0f} admissions/s): {out['cores_even_arrival']} hub core(s) like "
        f"the ones measured in run {out['from_run']} ({out['per_core']:,.0f}/s per core)."
    )
    print(f"All at once after an outage: {out['storm_answer']}.")
    if out["note"]:
        print(f"Note: {out['note']}.")
    for r in out["references"]:
        units = "" if r["units"] is None else f"{r['units']} unit(s), "
        print(f"  {r['service']}: {units}{'possible' if r['possible'] else 'not possible'} ({r['note']})")
    return 0


def add_plan_arguments(p) -> None:
    p.add_argument("--devices", type=integer(1), required=True, help="devices to admit (at least 1)")
    p.add_argument("--window", type=duration, default=600.0, help="time to admit them all, e.g. 10m (default)")
    p.add_argument("--p99", type=duration, default=0.5, help="latency objective, e.g. 500ms (default)")
    p.add_argument("--from", dest="source", default="results/latest", help="a run folder (default results/latest)")
    p.add_argument(
        "--backoff",
        default="azure-c",
        choices=sorted(PRESETS),
        help="device SDK backoff preset for the storm simulation",
    )
    p.add_argument("--json", action="store_true", help="print only the answer as JSON")


__all__ = ["MAX_CORES", "add_plan_arguments", "plan", "plan_command", "storm_at", "storm_cores"]
