"""``certstorm plan``: answer a sizing question from stored measurements, without a new run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from bench.capacity import analysis
from bench.capacity.planner import USL, simulate_storm


def parse_duration(text: str) -> float:
    """'10m', '90s', '1h', '500ms' or plain seconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def plan(devices: int, window_s: float, p99_ms: float, summary: dict, backoff: str = "azure-c") -> dict:
    from loadgen._backoff import preset

    knee = summary.get("knee")
    per_core = summary.get("projection", {}).get("per_core")
    if not knee or not per_core:
        raise ValueError("the stored run has no knee (no load level met its SLO); run again with more steps")
    if p99_ms < summary.get("slo_p99_ms", p99_ms):
        note = (f"the run's knee was found at p99 <= {summary['slo_p99_ms']:g} ms; a tighter {p99_ms:g} ms "
                "objective may need more cores than shown")
    else:
        note = ""
    usl = USL(**summary["scaling"]["usl"]) if summary.get("scaling", {}).get("usl") else None
    rate = devices / window_s
    cores = analysis.cores_needed(rate, per_core, usl)
    capacity = float(usl.throughput(cores)) if usl and cores else (cores or 0) * per_core
    storm = simulate_storm(devices, capacity, preset(backoff).vectorized(), latency=knee["p50"] / 1000,
                           horizon=max(3600.0, 4 * window_s), dt=0.05) if capacity else None
    return {
        "devices": devices, "window_s": window_s, "p99_ms": p99_ms, "rate": rate, "per_core": per_core,
        "cores": cores, "capacity": capacity, "backoff": backoff, "note": note,
        "storm_time_to_admit": storm.time_to_admit if storm else None,
        "storm_time_to_99pct": storm.time_to_fraction(0.99) if storm else None,
        "peak_pending_challenges": storm.peak_pending_challenges if storm else None,
        "retries": storm.refusals if storm else None,
        "references": analysis.cloud_references(rate),
        "from_run": summary.get("run_id"),
    }


def plan_command(args) -> int:
    source = Path(args.source)
    path = source / "summary.json" if source.is_dir() else source
    if not path.exists():
        print(f"error: no measurements at {path}; run 'certstorm run' first or give --from")
        return 2
    summary = json.loads(path.read_text())
    try:
        out = plan(args.devices, parse_duration(args.window), parse_duration(args.p99) * 1000, summary, args.backoff)
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    fin = (lambda x: "never (within the simulated horizon)" if x is None or not math.isfinite(x) else f"{x:,.0f} s")
    print(f"To admit {out['devices']:,} devices within {out['window_s']:g} s at p99 <= {out['p99_ms']:g} ms "
          f"({out['rate']:,.0f} admissions/s) you need {out['cores']} hub core(s) like the ones measured in run "
          f"{out['from_run']} ({out['per_core']:,.0f}/s per core).")
    if out["note"]:
        print(f"Note: {out['note']}.")
    print(f"Reconnect storm, all {out['devices']:,} at once with backoff {out['backoff']} against "
          f"{out['capacity']:,.0f}/s: 99% admitted after {fin(out['storm_time_to_99pct'])}, all after "
          f"{fin(out['storm_time_to_admit'])}; {out['retries']:,} refused attempts; peak pending challenges "
          f"{out['peak_pending_challenges']:,.0f}.")
    for r in out["references"]:
        units = "" if r["units"] is None else f"{r['units']} unit(s), "
        print(f"  {r['service']}: {units}{'possible' if r['possible'] else 'not possible'} ({r['note']})")
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    return 0


def add_plan_arguments(p) -> None:
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--window", default="10m", help="time to admit them all, e.g. 10m (default)")
    p.add_argument("--p99", default="500ms", help="latency objective, e.g. 500ms (default)")
    p.add_argument("--from", dest="source", default="results/latest", help="a run folder (default results/latest)")
    p.add_argument("--backoff", default="azure-c", help="device SDK backoff preset for the storm simulation")
    p.add_argument("--json", action="store_true")
