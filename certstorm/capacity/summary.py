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
from devicekit.profiles import Profile

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


def _target(config: dict) -> dict:
    """What was measured, as the report names it: the hub the run started, or the target at its URL."""
    t = config.get("target") or {"kind": "hub", "url": None, "cost_known": True}
    hub = t.get("kind", "hub") == "hub"
    return {
        **t,
        "noun": "hub" if hub else "target",
        "label": "HUB" if hub else "TARGET",
        "name": t.get("name") or ("the certstorm hub this run started" if hub else t.get("url")),
    }


def _more_generators(config: dict) -> str:
    """The exact command that gives the run more generator capacity: another local swarm process where
    this machine has a core to spare beside the target and the generator, else a worker on another host."""
    command = list(config.get("command") or ["certstorm", "run"])
    gen = config.get("generator", {})
    local = gen.get("local_processes") or 1
    target_cores = max([*config.get("hub_cores", {}).values(), config.get("target", {}).get("cores") or 1])
    spare = int(config.get("machine_cores", 1)) - int(gen.get("cores", 1)) - int(target_cores)
    if spare >= 1:
        return " ".join([*_without(command, "--swarm-processes"), "--swarm-processes", str(local + 1)])
    workers = [w for w in config.get("workers", []) if w]
    if len(workers) > 1:  # workers on other hosts join one search
        command = [*_without(command, "--workers"), "--workers", str(max(workers))]
    remote = int(gen.get("remote_workers") or 0) + 1
    return (
        " ".join([*_without(command, "--swarm-workers"), "--swarm-workers", str(remote)])
        + f", and on another host: certstorm swarm --worker --master-host {gen.get('host') or 'THIS-HOST'} "
        + f"--master-port {gen.get('port', 5557)}"
    )


def _without(command: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for word in command:
        if skip:
            skip = False
            continue
        if word == flag:
            skip = True
            continue
        if not word.startswith(flag + "="):
            out.append(word)
    return out


def _headline(side: str, k: dict | None, per: list[dict], config: dict, target: dict) -> str:
    noun = target["noun"]
    where = f" with {k['workers']} hub worker(s)" if k and k.get("workers") else f" at {target['name']}"
    if k:
        at = f"knee at {k['achieved']:,.0f} authentications/s{where}"
    else:
        at = "no step held"
    top = next((v["ceiling"] for v in per if v.get("ceiling")), None)
    ceiling = ""
    if top:
        share = f", the knee {k['achieved'] / top['achieved']:.0%} of it" if k else ""
        ceiling = f"; closed-loop ceiling {top['achieved']:,.0f}/s{share}"
    if side == "target":
        if not target.get("cost_known", True):
            broke = next(v["broke"] for v in per if v["side"] == "target")
            return (
                f"{target['label']}-LIMITED: {at}{ceiling} (at {broke['target']:,.0f}/s the target broke: "
                f"{', '.join(broke['reasons'])}; its CPU is not measured, so its cost is unknown)."
            )
        return f"{target['label']}-LIMITED: {at}{ceiling} (the {noun} reached {analysis.CPU_LIMIT:.0%} CPU first)."
    if side == "generator":
        broke = next(v["broke"] for v in per if v["side"] == "generator")
        target_cpu = broke.get("target_cpu")
        if target_cpu is not None and target_cpu >= analysis.CPU_LIMIT:
            headroom = (
                f"; the {noun} was at {target_cpu:.0%} there too, so both sides were saturated and the "
                f"{noun}'s own knee cannot be told from the generator's"
            )
        elif target_cpu:
            rate = broke["achieved"] * analysis.CPU_LIMIT / target_cpu
            headroom = (
                f"; the {noun} used {target_cpu:.0%} there, so it would take about {rate:,.0f}/s at "
                f"{analysis.CPU_LIMIT:.0%} CPU ({rate / broke['achieved']:.1f}× this)"
            )
        else:
            headroom = f"; the {noun}'s CPU is not measured, so its headroom is unknown"
        return (
            f"GENERATOR-LIMITED: {at}{ceiling}; the busiest generator process reached {broke['gen_cpu']:.0%} of its "
            f"core at {broke['target']:,.0f}/s{headroom}. These figures are the generator's, not the {noun}'s "
            f"capacity. Add generator capacity: {_more_generators(config)}."
        )
    if side == "neither":
        broke = next(v["broke"] for v in per if v["side"] == "neither")
        machine = broke.get("machine_cpu")
        tail = (
            f", while the machine's cores were {machine:.0%} busy: other work held them."
            if (machine or 0) >= analysis.CPU_LIMIT
            else f", the machine {fmt(_percent(machine), '%')} busy: the swarm's pacing fell short without a "
            "saturated side; rerun on a quieter machine."
        )
        target_cpu = fmt(_percent(broke.get("target_cpu")), "%", 0, "unknown")
        return (
            f"NEITHER SIDE SATURATED: {at}{ceiling}; at {broke['target']:,.0f}/s {', '.join(broke['reasons'])} "
            f"with the {noun} at {target_cpu} and the busiest generator at {broke['gen_cpu']:.0%} CPU{tail}"
        )
    top_rate = max((v["highest_target"] or 0 for v in per), default=0)
    return (
        f"KNEE NOT FOUND within the time bound{where}: every step up to {top_rate:,.0f}/s held{ceiling}; "
        "raise --search-seconds or --step-rate."
    )


def _rate(step: dict) -> str:
    return "the closed-loop step" if step["target"] is None else f"{step['target']:,.0f}/s"


def _mixed_work(steps: list[dict]) -> str | None:
    """A note when the fleet ran out during a search: its steps of the other kind of work were not judged."""
    for segment in dict.fromkeys(s["segment"] for s in steps):
        ss = [s for s in steps if s["segment"] == segment]
        kept = [*analysis.judged(ss), analysis.ceiling(ss)]
        apart = [s for s in ss if not any(s is k for k in kept)]
        if not apart:
            continue
        kind = "reconnects" if analysis.reconnects(apart[0]) else "first connections"
        admitted = sum(s["achieved"] * s["seconds"] for s in ss)
        return (
            f"The fleet was used up during the search: {len(apart)} step(s) from {_rate(apart[0])} on were mostly "
            f"{kind} of devices the hub had admitted before, which cost a hub less than first connections; they "
            "are in the step table but make neither the knee, the break, the ceiling nor the cost slope. "
            f"Make the fleet larger than the search admits (--devices; this one admitted about {admitted:,.0f})."
        )
    return None


def _storm(storm: dict | None, k: dict | None) -> dict | None:
    if not storm or not storm.get("curve"):
        return None
    curve = np.array(storm["curve"], dtype=float)
    devices = int(storm["devices"])
    admitted = int(curve[-1, 1])
    capacity = float(storm.get("capacity") or (k["achieved"] if k else 0)) or None
    profile = Profile.from_json(storm.get("profile"))
    transport = storm.get("transport") or "http"
    sim = None
    if capacity:
        sim = simulate_storm(
            devices,
            capacity,
            preset(storm.get("backoff") or "none").vectorized(),
            latency=(k["p50"] / 1000 if k and k["p50"] else 0.005),
            attempt_rate=storm.get("attempt_rate"),
            horizon=max(600.0, 4 * curve[-1, 0]),
            profile=profile if storm.get("profile") else None,
            transport=transport,
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
        "transport": transport,
        "profile": {**profile.to_json(), "text": profile.describe()} if storm.get("profile") else None,
        "in_flight": _in_flight(storm, sim, profile, transport, float(curve[-1, 0]))
        if storm.get("in_flight")
        else None,
        "predicted": {
            "time_to_admit": finite(sim.time_to_admit),
            "peak_pending": sim.peak_pending_challenges,
            "curve": _thin(sim.curve_t, sim.curve_admitted),
            "in_flight": _thin(sim.curve_t, sim.curve_in_flight),
            "hub_in_flight": _thin(sim.curve_t, sim.curve_hub_in_flight),
        }
        if sim
        else None,
    }


def _thin(t: np.ndarray, values: np.ndarray | None) -> list | None:
    """Every tenth point of a simulated curve (0.1 s apart), for plots."""
    if values is None:
        return None
    return [[float(t[i]), int(values[i])] for i in sorted({*range(0, t.size, 10), t.size - 1})]


def _stats(values) -> dict:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if not values.size:
        return {"mean": None, "peak": None}
    return {"mean": float(values.mean()), "peak": float(values.max())}


def _in_flight(storm: dict, sim, profile: Profile, transport: str, duration: float) -> dict:
    """Little's law against measurement, over the storm until its last admission: the authentications in
    flight on the device side (the swarm's 20 ms samples) and what the hub held (its gauge: TLS handshakes
    awaiting CONNECT, or challenges awaiting their proof), beside rate x time (L = λW, with the measured and
    with the profile's mean time per attempt) and beside the simulation."""
    fl = storm["in_flight"]
    end = max(1, round(duration / fl.get("bucket_s", 0.1)))
    measured = _stats(fl.get("mean", [])[:end])
    ended = sum(fl.get("attempts_ended", [])[:end])
    seconds = sum(fl.get("attempt_seconds", [])[:end])
    rate = ended / duration if duration else None
    w_measured = seconds / ended if ended else None
    admitted = float(np.array(storm["curve"], dtype=float)[-1, 1])
    share = min(1.0, admitted / ended) if ended else 1.0  # admitted attempts; the rest were refused
    w_profile = share * profile.attempt_seconds(transport, True) + (1 - share) * profile.attempt_seconds(
        transport, False
    )
    hub_key = "handshakes" if transport == "mqtts" else "pending_challenges"
    hub_rows = [r for r in storm.get("hub", []) if 0 <= r["t"] <= duration and r.get(hub_key) is not None]
    hub = _stats([r[hub_key] for r in hub_rows])
    # the hub holds a handshake per attempt (mqtts), a challenge per admitted attempt (http)
    holding_rate = rate if transport == "mqtts" else (admitted / duration if duration else None)
    sim_end = None if sim is None else min(sim.curve_t.size, max(1, round(duration / 0.01)))
    memory = storm.get("handshake_memory")
    per = memory["kib_per_handshake"] if memory else None
    rss = [r["rss_kib"] for r in storm.get("hub", []) if r.get("rss_kib") is not None]
    return {
        "window_s": duration,
        "attempts": ended,
        "attempt_rate": rate,
        "mean_attempt_s": w_measured,
        "profile_attempt_s": w_profile,
        "device": {
            **measured,
            "little_measured": rate * w_measured if rate and w_measured else None,
            "little_profile": rate * w_profile if rate is not None else None,
            "simulated": _stats(sim.curve_in_flight[:sim_end])
            if sim is not None and sim.curve_in_flight is not None
            else None,
        },
        "hub": {
            "what": "TLS handshakes awaiting CONNECT" if transport == "mqtts" else "challenges awaiting their proof",
            **hub,
            "little_profile": holding_rate * profile.hub_holds_seconds() if holding_rate is not None else None,
            "simulated": _stats(sim.curve_hub_in_flight[:sim_end])
            if sim is not None and sim.curve_hub_in_flight is not None
            else None,
        },
        "memory": {
            "kib_per_handshake": per,
            "r2": memory.get("r2") if memory else None,
            "probe": memory.get("points") if memory else None,
            "peak_handshakes_mib": per * hub["peak"] / 1024 if per is not None and hub["peak"] is not None else None,
            "hub_rss_peak_mib": max(rss) / 1024 if rss else None,
            "reason": None
            if memory
            else (
                "pending challenges are sealed tokens: the hub keeps no state per challenge"
                if transport == "http"
                else "not probed (a target this run did not start)"
            ),
        },
    }


def summarise(run_dir: Path) -> dict:
    raw = run_dir / "raw"
    config = load(raw / "config.json", {})
    floor = load(raw / "floor.json", {})
    steps = load(raw / "steps.json", [])
    segments = load(raw / "segments.json", [])
    target = _target(config)
    slo = float(config.get("slo_p99_ms", 500))
    per = analysis.verdicts(steps, segments, slo)
    if not target.get("cost_known", True):
        for v in per:
            broke = v["broke"]
            if v["side"] == "neither" and broke and broke["gen_cpu"] < analysis.CPU_LIMIT:
                v["side"] = "target"
    side = analysis.overall_side(per)
    k = analysis.knee(steps, slo)
    verify_us = floor.get("verify_us")
    floor_us = 2 * verify_us if verify_us else None
    target_us = k["target_us_per_auth"] if k else None
    verdict = next((v for v in per if v["knee"] is k), None) if k else None
    slope = verdict["cost"] if verdict else None

    points = analysis.hub_capacity_points(per)
    cores = int(config.get("machine_cores", 1))
    scale = analysis.scaling(points, cores)
    hub_cores = {int(w): float(c) for w, c in config.get("hub_cores", {}).items()}
    per_core, basis = None, "no step held, so nothing to project from"
    projection = config.get("projection", {"devices": 2_000_000, "window_s": 600})
    rate = projection["devices"] / projection["window_s"]
    needed = None
    if side == "target" and points and scale.usl is not None:
        w = max(points, key=lambda w: points[w] / hub_cores.get(w, w))
        per_core = points[w] / hub_cores.get(w, w)
        basis = f"the USL fitted to the hub-limited knees, {points[w]:,.0f}/s with {w} worker(s)"
        needed = analysis.cores_needed(rate, per_core, scale.usl)
    elif slope and slope["slope_us"] > 0:
        busy = analysis.cores_for(rate, slope)
        needed = math.ceil(busy / analysis.CPU_LIMIT)
        per_core = analysis.CPU_LIMIT / (slope["slope_us"] * 1e-6)
        basis = (
            f"the {target['noun']}'s CPU as a slope: {slope['slope_us']:,.0f} µs per authentication plus "
            f"{slope['fixed_cores']:.2f} core(s) fixed (R² {slope['r2']:.2f}), each core {analysis.CPU_LIMIT:.0%} "
            "busy"
        )
    elif target_us:
        per_core = analysis.CPU_LIMIT * 1e6 / target_us
        basis = (
            f"the {target['noun']}'s CPU per authentication at the knee ({target_us:,.0f} µs) with a core "
            f"{analysis.CPU_LIMIT:.0%} busy"
        )
        needed = analysis.cores_needed(rate, per_core, None)

    notes = []
    gen_cores = config.get("generator_cores", 1)
    if config.get("shared_cores"):
        notes.append(
            f"Hub and generator shared this machine's {cores} core(s): hub CPU is read against the "
            f"cores left beside the generator's {gen_cores}."
        )
    elif target["kind"] == "hub" and any(c + gen_cores >= cores for c in hub_cores.values()):
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
    mixed = _mixed_work(steps)
    if mixed:
        notes.append(mixed)
    if not target.get("cost_known", True):
        notes.append(
            "The target's CPU was not measured (no --target-pid or --target-metrics): steps were judged "
            "by p99, errors and the rate delivered only, and its cost per authentication is unknown."
        )
    for v in per:
        for worker, at in (v.get("workers_lost") or {}).items():
            notes.append(
                f"Generator worker {worker} was lost {float(at):.0f} s into the run; the steps after it "
                "were judged on the workers that still reported."
            )
    return strict(
        {
            "run_id": run_dir.name,
            # a plan must say how devices connected: a TLS handshake costs far more than the HTTP exchange
            "first_line": _headline(side, k, per, config, target)
            + (" Devices over MQTT with mutual TLS." if config.get("transport") == "mqtts" else ""),
            "transport": config.get("transport", "http"),
            "target": target,
            "notes": notes,
            "limit": side,
            "slo_p99_ms": slo,
            "knee": k,
            "per_segment": per,
            "cost": {
                "target_us_per_auth": target_us,
                "gen_us_per_auth": k["gen_us_per_auth"] if k else None,
                "reconnect_share": k.get("reconnect_share") if k else None,
                "slope": slope,
                "generator_slope": verdict["generator_cost"] if verdict else None,
                "floor_us": floor_us,
                "floor_multiple": target_us / floor_us if target_us and floor_us else None,
                "reason": None if k else "no step held",
            },
            "time": _time_accounting(per),
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


def _time_accounting(per: list[dict]) -> dict:
    """How much of the searches' time was in measurement windows, how much settling after steps that broke
    (deliberate, measured by no step), and the share outside both (seconds no step holds)."""
    search = sum(v.get("seconds") or 0 for v in per)
    windows = sum(v.get("in_windows_s") or 0 for v in per)
    settle = sum(v.get("settle_s") or 0 for v in per)
    startup = sum(v.get("startup_s") or 0 for v in per)
    return {
        "search_s": search,
        "in_windows_s": windows,
        "settle_s": settle,
        "startup_s": startup,
        "outside_share": (search - windows - settle) / search if search else None,
    }
