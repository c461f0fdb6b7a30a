"""What a run measured, as ``summary.json``: built from the run folder's raw files (listed in
:mod:`certstorm.capacity.report`), so a report can be rebuilt at any time; nothing in it is kept that the
raw files do not hold. Strict JSON: a figure that does not exist is null, with a reason beside it where one
is needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from certstorm.capacity import analysis
from certstorm.capacity.planner import simulate_storm
from certstorm.capacity.text import fmt
from devicekit.backoff import preset

__all__ = ["MILESTONES", "finite", "load", "strict", "summarise"]

MILESTONES = (0.5, 0.9, 0.99, 1.0)


def load(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def strict(value):
    """``value`` with every non-finite float replaced by None and numpy scalars made plain."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def finite(x):
    return x if x is not None and math.isfinite(x) else None


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def _headline(side: str, k: dict | None, per: list[dict], config: dict) -> str:
    at = f"knee at {k['achieved']:,.0f} authentications/s with {k['workers']} hub worker(s)" if k else "no step held"
    if side == "hub":
        return f"HUB-LIMITED: {at} (the hub reached {analysis.CPU_LIMIT:.0%} CPU first)."
    if side == "generator":
        broke = next(v["broke"] for v in per if v["side"] == "generator")
        headroom = ""
        if k and k["hub_us_per_auth"]:
            hub_rate = (
                analysis.CPU_LIMIT
                * 1e6
                / k["hub_us_per_auth"]
                * config.get("hub_cores", {}).get(str(k["workers"]), k["workers"])
            )
            headroom = (
                f"; the hub used {broke['hub_cpu']:.0%} of its core(s) there, so it would take about "
                f"{hub_rate:,.0f}/s at {analysis.CPU_LIMIT:.0%} CPU ({hub_rate / k['achieved']:.1f}× this)"
            )
        return (
            f"GENERATOR-LIMITED: {at}; the generator reached {broke['gen_cpu']:.0%} of its core at "
            f"{broke['target']:,.0f}/s{headroom}. These figures are the generator's, not the hub's capacity."
        )
    if side == "neither":
        broke = next(v["broke"] for v in per if v["side"] == "neither")
        return (
            f"NEITHER SIDE SATURATED: {at}; at {broke['target']:,.0f}/s "
            f"{', '.join(broke['reasons'])} with the hub at {broke['hub_cpu']:.0%} and the generator at "
            f"{broke['gen_cpu']:.0%} CPU"
            + (
                f", while the machine's cores were {broke['machine_cpu']:.0%} busy: other work held them."
                if (broke.get("machine_cpu") or 0) >= analysis.CPU_LIMIT
                else f", the machine {fmt(_percent(broke.get('machine_cpu')), '%')}"
                " busy: the swarm's pacing fell short without a saturated side; rerun on a quieter machine."
            )
        )
    top = max((v["highest_target"] or 0 for v in per), default=0)
    return (
        f"KNEE NOT FOUND within the time bound: every step up to {top:,.0f}/s held; "
        f"raise --search-seconds or --step-rate."
    )


def _storm(storm: dict | None, k: dict | None) -> dict | None:
    if not storm or not storm.get("curve"):
        return None
    curve = np.array(storm["curve"], dtype=float)
    devices = int(storm["devices"])
    admitted = int(curve[-1, 1])
    capacity = float(storm.get("capacity") or (k["achieved"] if k else 0)) or None
    sim = None
    if capacity:
        sim = simulate_storm(
            devices,
            capacity,
            preset(storm.get("backoff") or "none").vectorized(),
            latency=(k["p50"] / 1000 if k and k["p50"] else 0.005),
            attempt_rate=storm.get("attempt_rate"),
            horizon=max(600.0, 4 * curve[-1, 0]),
        )
    milestones = []
    for frac in MILESTONES:
        need = math.ceil(devices * frac)
        hit = curve[curve[:, 1] >= need]
        measured = float(hit[0, 0]) if hit.size else None
        simulated = finite(sim.time_to_fraction(frac)) if sim else None
        milestones.append(
            {
                "fraction": frac,
                "measured_s": measured,
                "simulated_s": simulated,
                "reason": None if measured is not None else f"not reached within the storm's {curve[-1, 0]:.0f} s",
            }
        )
    return {
        "devices": devices,
        "capacity": capacity,
        "backoff": storm.get("backoff"),
        "retries": storm.get("retries"),
        "attempt_rate": storm.get("attempt_rate"),
        "bound_s": storm.get("bound_s"),
        "duration_s": float(curve[-1, 0]),
        "admitted": admitted,
        "admitted_fraction": admitted / devices if devices else 0.0,
        "finished": admitted >= devices,
        "milestones": milestones,
        "failures_by_code": storm.get("failures_by_code", {}),
        "predicted": {
            "time_to_admit": finite(sim.time_to_admit),
            "peak_pending": sim.peak_pending_challenges,
            "curve": [
                [float(sim.curve_t[i]), int(sim.curve_admitted[i])]
                for i in sorted({*range(0, sim.curve_t.size, 10), sim.curve_t.size - 1})
            ],
        }
        if sim
        else None,
    }


def summarise(run_dir: Path) -> dict:
    raw = run_dir / "raw"
    config = load(raw / "config.json", {})
    floor = load(raw / "floor.json", {})
    steps = load(raw / "steps.json", [])
    searches = load(raw / "search.json", [])
    slo = float(config.get("slo_p99_ms", 500))
    per = analysis.verdicts(steps, searches, slo)
    side = analysis.overall_side(per)
    k = analysis.knee(steps, slo)
    verify_us = floor.get("verify_us")
    floor_us = 2 * verify_us if verify_us else None
    hub_us = k["hub_us_per_auth"] if k else None

    points = analysis.hub_capacity_points(per)
    cores = int(config.get("machine_cores", 1))
    scale = analysis.scaling(points, cores)
    hub_cores = {int(w): float(c) for w, c in config.get("hub_cores", {}).items()}
    per_core, basis = None, "no step held, so nothing to project from"
    if side == "hub" and points:
        w = max(points, key=lambda w: points[w] / hub_cores.get(w, w))
        per_core = points[w] / hub_cores.get(w, w)
        basis = f"the hub-limited knee with {w} worker(s), per hub core"
    elif hub_us:
        per_core = analysis.CPU_LIMIT * 1e6 / hub_us
        basis = (
            f"hub CPU per authentication at the knee ({hub_us:,.0f} µs) with a core {analysis.CPU_LIMIT:.0%} "
            "busy, because the hub did not saturate"
        )
    projection = config.get("projection", {"devices": 2_000_000, "window_s": 600})
    rate = projection["devices"] / projection["window_s"]
    needed = analysis.cores_needed(rate, per_core, scale.usl) if per_core else None

    notes = []
    gen_cores = config.get("generator_cores", 1)
    if config.get("shared_cores"):
        notes.append(
            f"Hub and generator shared this machine's {cores} core(s): hub CPU is read against the "
            f"cores left beside the generator's {gen_cores}."
        )
    elif any(c + gen_cores >= cores for c in hub_cores.values()):
        notes.append(
            f"Hub and generator together took all {cores} core(s) of this machine, with nothing left for "
            "other work: a busy machine shows as falling behind with neither side saturated."
        )
    busy = [s["machine_cpu"] for s in steps if s.get("machine_cpu") is not None]
    if busy and max(busy) >= analysis.CPU_LIMIT:
        notes.append(
            f"The machine's cores were up to {max(busy):.0%} busy during the search (every process "
            "counted): figures from a busy machine are lower and noisier than from an idle one."
        )
    return strict(
        {
            "run_id": run_dir.name,
            # a plan must say how devices connected: a TLS handshake costs far more than the HTTP exchange
            "first_line": _headline(side, k, per, config)
            + (" Devices over MQTT with mutual TLS." if config.get("transport") == "mqtts" else ""),
            "transport": config.get("transport", "http"),
            "notes": notes,
            "limit": side,
            "slo_p99_ms": slo,
            "knee": k,
            "per_workers": per,
            "cost": {
                "hub_us_per_auth": hub_us,
                "gen_us_per_auth": k["gen_us_per_auth"] if k else None,
                "reconnect_share": k.get("reconnect_share") if k else None,
                "floor_us": floor_us,
                "floor_multiple": hub_us / floor_us if hub_us and floor_us else None,
                "reason": None if k else "no step held",
            },
            "steps": steps,
            "errors": load(raw / "errors.json", {}),
            "storm": _storm(load(raw / "storm.json"), k),
            "scaling": {
                "points": points,
                "note": scale.note,
                "usl": vars(scale.usl) if scale.usl else None,
                "peak_workers": scale.usl.peak_workers if scale.usl else None,
                "predicted_from_fewer": scale.predicted_from_fewer,
            },
            "projection": {
                **projection,
                "rate": rate,
                "per_core": per_core,
                "cores": needed,
                "basis": basis,
                "p99_ms": slo,
                "references": analysis.cloud_references(rate),
            },
            "config": config,
        }
    )
