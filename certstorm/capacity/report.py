"""Turn a run directory's raw data into ``summary.json``, ``report.md`` and a self-contained ``report.html``.

``certstorm report results/<run>`` calls :func:`build_report` again at any time: nothing in the report is
kept that the raw files do not hold. The raw files a run writes under ``raw/``:

* ``config.json`` — what was asked for (devices, search, SLO, worker counts and their cores, storm, projection);
* ``floor.json`` — ``{"verify_us": …}``: one raw P-256 verify measured in this run;
* ``timeline.json`` — the per-second samples, and ``steps.json`` the measured steps, both described in
  :mod:`certstorm.capacity.analysis`; ``search.json`` — one entry per worker count searched;
* ``errors.json`` — failed authentications by error code, per search;
* ``storm.json`` — the reconnect storm: ``{"devices", "capacity", "backoff", "curve": [[t, admitted], …],
  "retries", "attempt_rate", "bound_s", "failures_by_code"}`` (optional).

``summary.json`` is strict JSON (no NaN or Infinity: a figure that does not exist is null, with a reason
beside it where one is needed); ``docs/summary.schema.json`` describes it.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np

from certstorm.capacity import analysis
from certstorm.capacity.planner import USL, simulate_storm
from certstorm.capacity.report_templates import html_template, markdown_template

SECTIONS = ("Verdict", "Saturation knee", "Cost per authentication", "Latency", "Errors", "Over time",
            "Reconnect storm", "Scaling", "Projections")
MILESTONES = (0.5, 0.9, 0.99, 1.0)


def _load(path: Path, default=None):
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


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def _headline(side: str, k: dict | None, per: list[dict], config: dict) -> str:
    at = f"knee at {k['achieved']:,.0f} authentications/s with {k['workers']} hub worker(s)" if k else "no step held"
    if side == "hub":
        return f"HUB-LIMITED: {at} (the hub reached {analysis.CPU_LIMIT:.0%} CPU first)."
    if side == "generator":
        broke = next(v["broke"] for v in per if v["side"] == "generator")
        headroom = ""
        if k and k["hub_us_per_auth"]:
            hub_rate = analysis.CPU_LIMIT * 1e6 / k["hub_us_per_auth"] * config.get("hub_cores", {}).get(
                str(k["workers"]), k["workers"])
            headroom = (f"; the hub used {broke['hub_cpu']:.0%} of its core(s) there, so it would take about "
                        f"{hub_rate:,.0f}/s at {analysis.CPU_LIMIT:.0%} CPU ({hub_rate / k['achieved']:.1f}× this)")
        return (f"GENERATOR-LIMITED: {at}; the generator reached {broke['gen_cpu']:.0%} of its core at "
                f"{broke['target']:,.0f}/s{headroom}. These figures are the generator's, not the hub's capacity.")
    if side == "neither":
        broke = next(v["broke"] for v in per if v["side"] == "neither")
        return (f"NEITHER SIDE SATURATED: {at}; at {broke['target']:,.0f}/s "
                f"{', '.join(broke['reasons'])} with the hub at {broke['hub_cpu']:.0%} and the generator at "
                f"{broke['gen_cpu']:.0%} CPU" + (
                    f", while the machine's cores were {broke['machine_cpu']:.0%} busy: other work held them."
                    if (broke.get("machine_cpu") or 0) >= analysis.CPU_LIMIT else
                    f", the machine {_fmt(100 * broke['machine_cpu'] if broke.get('machine_cpu') is not None else None, '%')}"
                    " busy: the swarm's pacing fell short without a saturated side; rerun on a quieter machine."))
    top = max((v["highest_target"] or 0 for v in per), default=0)
    return (f"KNEE NOT FOUND within the time bound: every step up to {top:,.0f}/s held; "
            f"raise --search-seconds or --step-rate.")


def _storm(storm: dict | None, k: dict | None) -> dict | None:
    if not storm or not storm.get("curve"):
        return None
    curve = np.array(storm["curve"], dtype=float)
    devices = int(storm["devices"])
    admitted = int(curve[-1, 1])
    capacity = float(storm.get("capacity") or (k["achieved"] if k else 0)) or None
    sim = None
    if capacity:
        from devicekit.backoff import preset  # the swarm's own presets, so both sides retry alike
        sim = simulate_storm(devices, capacity, preset(storm.get("backoff") or "none").vectorized(),
                             latency=(k["p50"] / 1000 if k and k["p50"] else 0.005),
                             attempt_rate=storm.get("attempt_rate"), horizon=max(600.0, 4 * curve[-1, 0]))
    milestones = []
    for frac in MILESTONES:
        need = math.ceil(devices * frac)
        hit = curve[curve[:, 1] >= need]
        measured = float(hit[0, 0]) if hit.size else None
        simulated = _finite(sim.time_to_fraction(frac)) if sim else None
        milestones.append({
            "fraction": frac, "measured_s": measured, "simulated_s": simulated,
            "reason": None if measured is not None else f"not reached within the storm's {curve[-1, 0]:.0f} s"})
    return {
        "devices": devices, "capacity": capacity, "backoff": storm.get("backoff"), "retries": storm.get("retries"),
        "attempt_rate": storm.get("attempt_rate"), "bound_s": storm.get("bound_s"), "duration_s": float(curve[-1, 0]),
        "admitted": admitted, "admitted_fraction": admitted / devices if devices else 0.0,
        "finished": admitted >= devices, "milestones": milestones,
        "failures_by_code": storm.get("failures_by_code", {}),
        "predicted": {"time_to_admit": _finite(sim.time_to_admit), "peak_pending": sim.peak_pending_challenges,
                      "curve": [[float(sim.curve_t[i]), int(sim.curve_admitted[i])]
                                for i in sorted({*range(0, sim.curve_t.size, 10), sim.curve_t.size - 1})]}
        if sim else None,
    }


def summarise(run_dir: Path) -> dict:
    raw = run_dir / "raw"
    config = _load(raw / "config.json", {})
    floor = _load(raw / "floor.json", {})
    steps = _load(raw / "steps.json", [])
    searches = _load(raw / "search.json", [])
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
        basis = (f"hub CPU per authentication at the knee ({hub_us:,.0f} µs) with a core {analysis.CPU_LIMIT:.0%} "
                 "busy, because the hub did not saturate")
    projection = config.get("projection", {"devices": 2_000_000, "window_s": 600})
    rate = projection["devices"] / projection["window_s"]
    needed = analysis.cores_needed(rate, per_core, scale.usl) if per_core else None

    notes = []
    gen_cores = config.get("generator_cores", 1)
    if config.get("shared_cores"):
        notes.append(f"Hub and generator shared this machine's {cores} core(s): hub CPU is read against the "
                     f"cores left beside the generator's {gen_cores}.")
    elif any(c + gen_cores >= cores for c in hub_cores.values()):
        notes.append(f"Hub and generator together took all {cores} core(s) of this machine, with nothing left for "
                     "other work: a busy machine shows as falling behind with neither side saturated.")
    busy = [s["machine_cpu"] for s in steps if s.get("machine_cpu") is not None]
    if busy and max(busy) >= analysis.CPU_LIMIT:
        notes.append(f"The machine's cores were up to {max(busy):.0%} busy during the search (every process "
                     "counted): figures from a busy machine are lower and noisier than from an idle one.")
    return strict({
        "run_id": run_dir.name,
        # a plan must say how devices connected: a TLS handshake costs far more than the HTTP exchange
        "first_line": _headline(side, k, per, config) + (
            " Devices over MQTT with mutual TLS." if config.get("transport") == "mqtts" else ""),
        "transport": config.get("transport", "http"),
        "notes": notes,
        "limit": side,
        "slo_p99_ms": slo,
        "knee": k,
        "per_workers": per,
        "cost": {"hub_us_per_auth": hub_us, "gen_us_per_auth": k["gen_us_per_auth"] if k else None,
                 "reconnect_share": k.get("reconnect_share") if k else None,
                 "floor_us": floor_us, "floor_multiple": hub_us / floor_us if hub_us and floor_us else None,
                 "reason": None if k else "no step held"},
        "steps": steps,
        "errors": _load(raw / "errors.json", {}),
        "storm": _storm(_load(raw / "storm.json"), k),
        "scaling": {"points": points, "note": scale.note, "usl": vars(scale.usl) if scale.usl else None,
                    "peak_workers": scale.usl.peak_workers if scale.usl else None,
                    "predicted_from_fewer": scale.predicted_from_fewer},
        "projection": {**projection, "rate": rate, "per_core": per_core, "cores": needed, "basis": basis,
                       "p99_ms": slo, "references": analysis.cloud_references(rate)},
        "config": config,
    })


# -- plots ----------------------------------------------------------------------------------------

def _plots(run_dir: Path, summary: dict, samples: list[dict]) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made: dict[str, Path] = {}
    steps = summary["steps"]

    segments = sorted({s["segment"] for s in samples}, key=lambda g: min(s["t"] for s in samples if s["segment"] == g))
    if segments:
        fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
        for g in segments:  # one line per hub lifetime: nothing is drawn across a restart
            rows = [s for s in samples if s["segment"] == g]
            t = [s["t"] for s in rows]
            label = "storm" if g == "storm" else f"{rows[0]['workers']} worker(s)"
            ax1.plot(t, [s["ok_rate"] for s in rows], label=f"admitted/s, {label}")
            ax1.plot(t, [s["error_rate"] for s in rows], ":", label=f"refused/s, {label}")
            ax2.plot(t, [100 * s["hub_cpu"] for s in rows], label=f"hub CPU %, {label}")
            ax2.plot(t, [100 * s["gen_cpu"] for s in rows], "--", label=f"generator CPU %, {label}")
        for s in steps:
            ax1.hlines(s["target"], s["start"], s["end"], colors="grey", lw=0.8)
            if s["p99"] is not None:
                ax3.hlines(s["p99"], s["start"], s["end"], colors="C3", lw=2)
        ax1.set_ylabel("authentications/s\n(grey: intended)")
        ax1.set_ylim(bottom=0)
        ax1.legend(loc="upper left", fontsize=7)
        ax2.axhline(100 * analysis.CPU_LIMIT, color="grey", lw=0.8, ls=":")
        ax2.set_ylabel("CPU % of own cores")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="upper left", fontsize=7)
        ax3.axhline(summary["slo_p99_ms"], color="red", lw=0.8, ls="--", label="SLO")
        ax3.set_yscale("log")
        ax3.set_ylabel("p99 per step, ms")
        ax3.set_xlabel("seconds since the run began")
        ax3.legend(loc="upper left", fontsize=7)
        _save(fig, out_dir, "timeline", made)

    if steps:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for w in sorted({s["workers"] for s in steps}):
            ws = sorted((s for s in steps if s["workers"] == w and s["p99"] is not None), key=lambda s: s["achieved"])
            x = [s["achieved"] for s in ws]
            ax1.plot(x, [s["p99"] for s in ws], "o-", label=f"p99, {w} worker(s)")
            ax1.plot(x, [s["p50"] for s in ws], "x:", label=f"p50, {w} worker(s)")
            cs = sorted((s for s in steps if s["workers"] == w and s["hub_us_per_auth"]), key=lambda s: s["achieved"])
            ax2.plot([s["achieved"] for s in cs], [s["hub_us_per_auth"] for s in cs], "o-", label=f"hub, {w} worker(s)")
            ax2.plot([s["achieved"] for s in cs], [s["gen_us_per_auth"] for s in cs], "x:", label=f"generator, {w} w.")
        ax1.axhline(summary["slo_p99_ms"], color="red", lw=0.8, ls="--", label="SLO")
        ax1.set_yscale("log")
        ax1.set_xlabel("admitted authentications/s")
        ax1.set_ylabel("whole authentication, ms")
        ax1.legend(fontsize=7)
        ax2.set_xlabel("admitted authentications/s")
        ax2.set_ylabel("CPU µs per authentication")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=7)
        _save(fig, out_dir, "latency", made)

    storm = summary.get("storm")
    if storm:
        curve = np.array(_load(run_dir / "raw" / "storm.json", {}).get("curve", []), dtype=float)
        fig, ax = plt.subplots(figsize=(9, 4))
        if curve.size:
            ax.plot(curve[:, 0], curve[:, 1], label="measured")
        if storm.get("predicted") and storm["predicted"]["curve"]:
            p = np.array(storm["predicted"]["curve"], dtype=float)
            ax.plot(p[:, 0], p[:, 1], "--", label="simulated from the quota and the measured attempt rate")
        ax.axhline(storm["devices"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("seconds since the outage ended")
        ax.set_ylabel("devices admitted")
        ax.legend()
        _save(fig, out_dir, "storm", made)

    sc = summary["scaling"]
    if sc["usl"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        n = sorted(int(k) for k in sc["points"])
        ax.plot(n, [sc["points"][str(k)] for k in n], "o", label="hub-limited knee")
        grid = np.linspace(1, max(n) * 2, 50)
        ax.plot(grid, USL(**sc["usl"]).throughput(grid), "-", label="USL fit")
        ax.set_xlabel("hub workers")
        ax.set_ylabel("authentications/s")
        ax.legend()
        _save(fig, out_dir, "scaling", made)
    return made


def _save(fig, out_dir: Path, name: str, made: dict[str, Path]) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    made[name] = out_dir / f"{name}.png"
    fig.savefig(made[name], dpi=80)
    plt.close(fig)


# -- text -----------------------------------------------------------------------------------------

def _fmt(x, unit="", digits=0, missing="not measured"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return f"{x:,.{digits}f}{unit}"


def _text(text):
    return {"kind": "text", "text": text}


def _table(title, header, rows):
    return {"kind": "table", "title": title, "header": list(header), "rows": [list(r) for r in rows]}


def _image(name, alt, plots):
    return [{"kind": "image", "name": name, "alt": alt}] if name in plots else []


def sections(summary: dict, plots: dict[str, Path]) -> list[dict]:
    """The report's content, once, for both renderings."""
    k, slo, out = summary["knee"], summary["slo_p99_ms"], []
    per = summary["per_workers"]
    out.append(("Verdict", [
        {"kind": "list", "items": [
            f"Overall: {summary['limit']}-limited" if summary["limit"] in ("hub", "generator") else
            f"Overall: {summary['limit']}",
            *(f"{v['workers']} hub worker(s): {v['side']}" + (
                f" at {v['broke']['target']:,.0f}/s ({', '.join(v['broke']['reasons'])})" if v["broke"] else
                f", every step up to {_fmt(v['highest_target'])}/s held")
              + f"; searched {_fmt(v['seconds'], ' s')} of {_fmt(v['bound_s'], ' s')}" for v in per),
            f"A step holds when p99 ≤ {slo:g} ms, errors ≤ 0.1%, at least 90% of its intended rate is admitted, "
            f"and neither the hub nor the generator reaches {analysis.CPU_LIMIT:.0%} CPU.",
        ]}]))
    rows = [(s["workers"], s["stage"], _fmt(s["target"]), _fmt(s["achieved"]), f"{s['error_rate']:.2%}",
             f"{s['hub_cpu']:.0%}", f"{s['gen_cpu']:.0%}",
             _fmt(100 * s["machine_cpu"] if s.get("machine_cpu") is not None else None, "%"),
             _fmt(s["p50"], "", 2), _fmt(s["p99"], "", 1),
             "holds" if analysis.holds(s, slo) else ", ".join(analysis.reasons(s, slo))) for s in summary["steps"]]
    out.append(("Saturation knee", [
        _text(f"{_fmt(k['achieved'])} authentications/s with {k['workers']} hub worker(s) ({k['stage']} step at "
              f"{_fmt(k['target'])}/s): p99 {_fmt(k['p99'], ' ms', 1)}, errors {k['error_rate']:.3%}, hub CPU "
              f"{k['hub_cpu']:.0%}, generator CPU {k['gen_cpu']:.0%}." if k else "No step held."),
        _table("Every step of the knee search, in the order run (latency: whole authentication, the swarm's µs "
               "histogram of that step)", ("workers", "stage", "intended/s", "admitted/s", "errors", "hub CPU",
                                           "gen CPU", "machine CPU", "p50 ms", "p99 ms", "verdict"), rows)]))
    c = summary["cost"]
    def share(s):
        return _fmt(None if s.get("reconnect_share") is None else 100 * s["reconnect_share"], "%")

    cost_rows = [(s["workers"], _fmt(s["achieved"]), share(s), f"{s['hub_cpu']:.0%}", _fmt(s["hub_us_per_auth"]),
                  _fmt(s["gen_us_per_auth"])) for s in sorted(summary["steps"], key=lambda s: (s["workers"], s["achieved"]))]
    mix = ("" if not k or k.get("reconnect_share") is None else
           f" At the knee {k['reconnect_share']:.0%} of the admissions were reconnects of devices the hub had "
           "admitted before (its device cache: a hash, a lookup and the proof's verify), the rest first connections "
           "(a full device judgement and a registry insert); a fleet larger than the devices a step admits "
           "measures first connections only (--devices).")
    out.append(("Cost per authentication", [
        _text(f"At the knee the hub spent {_fmt(c['hub_us_per_auth'], ' µs')} of CPU per authentication (both "
              f"requests) and the generator {_fmt(c['gen_us_per_auth'], ' µs')}; the crypto floor (two raw P-256 "
              f"verifies, measured in this run) is {_fmt(c['floor_us'], ' µs')}, so the hub spends "
              f"{_fmt(c['floor_multiple'], '×', 2)} the floor. The table shows how the cost moves with load; projections "
              "use the cost at the knee, where the hub's fixed per-second work is spread over the most "
              "authentications." + mix),
        _table("CPU per authentication by load", ("workers", "admitted/s", "reconnects", "hub CPU", "hub µs/auth",
                                                  "generator µs/auth"), cost_rows)]))
    lat = []
    if k:
        lat.append(_table(f"At the knee ({k['workers']} worker(s), {k['stage']} step at {_fmt(k['target'])}/s): whole "
                          "authentication, µs histogram", ("p50 ms", "p90 ms", "p99 ms", "p99.9 ms"),
                          [(_fmt(k["p50"], "", 2), _fmt(k["p90"], "", 2), _fmt(k["p99"], "", 2), _fmt(k["p999"], "", 2))]))
    lat += _image("latency", "latency and cost against admitted rate", plots)
    out.append(("Latency", lat or [_text("No step completed an authentication.")]))
    err_rows = [(seg, code, f"{n:,}") for seg, codes in summary["errors"].items() for code, n in codes.items()]
    st = summary["storm"]
    if st:
        err_rows += [("reconnect storm (throttled on purpose)", code, f"{n:,}") for code, n in st["failures_by_code"].items()]
    out.append(("Errors", [_table("Failed authentications by step and error code, per run", ("run", "code", "count"),
                                  err_rows)] if err_rows else [_text("No authentication failed.")]))
    out.append(("Over time", _image("timeline", "rates, CPU and p99 over time", plots) or [_text("No samples.")]))
    if st:
        storm_blocks = [
            _text(f"{st['devices']:,} devices reconnecting at once against {_fmt(st['capacity'])} admissions/s, backoff "
                  f"{st['backoff']}: {st['admitted']:,} admitted ({st['admitted_fraction']:.1%}) in "
                  f"{_fmt(st['duration_s'], ' s', 1)}, {_fmt(st['retries'])} refused attempts. The storm ran until every "
                  f"device was admitted or {_fmt(st['bound_s'], ' s')} (twice the simulated time to admit all, at least "
                  "20 s, capped by --storm-timeout)."),
            _table("Time to admit, measured beside simulated (simulation: the quota, the backoff, and the swarm's "
                   f"measured attempt rate of {_fmt(st['attempt_rate'])}/s)", ("admitted", "measured", "simulated"),
                   [(f"{m['fraction']:.0%}", _fmt(m["measured_s"], " s", 1, m["reason"] or ""),
                     _fmt(m["simulated_s"], " s", 1, "not within the simulated horizon")) for m in st["milestones"]]),
            *_image("storm", "storm admission curve", plots)]
    else:
        storm_blocks = [_text("No storm in this run.")]
    out.append(("Reconnect storm", storm_blocks))
    sc = summary["scaling"]
    scale_blocks = [_text(sc["note"] + ".")]
    if sc["points"]:
        scale_blocks.append(_text("Hub-limited knee by workers: " + ", ".join(f"{w}: {_fmt(v)}/s" for w, v in sc["points"].items())))
    if sc["usl"]:
        u = sc["usl"]
        scale_blocks.append(_text(f"USL: γ = {u['gamma']:,.0f}/s, α = {u['alpha']:.4f}, β = {u['beta']:.5f}; peak at "
                                  f"{_fmt(sc['peak_workers'], ' workers', 1, 'no peak (no coherency cost)')}."))
    pf = sc["predicted_from_fewer"]
    if pf:
        scale_blocks.append(_text(f"Throughput at {pf['workers']} workers predicted from fewer: {_fmt(pf['predicted'])}/s, "
                                  f"measured {_fmt(pf['measured'])}/s: error {100 * pf['error']:.1f}%."))
    out.append(("Scaling", scale_blocks + _image("scaling", "USL fit", plots)))
    pr = summary["projection"]
    out.append(("Projections", [
        _text(f"To admit {pr['devices']:,} devices arriving evenly over {pr['window_s'] / 60:g} min at p99 ≤ "
              f"{pr['p99_ms']:g} ms ({_fmt(pr['rate'])} admissions/s): {_fmt(pr['cores'], ' hub core(s)', 0, 'unknown')} "
              f"of this machine ({_fmt(pr['per_core'])}/s per core, from {pr['basis']}). For all of them reconnecting "
              f"at once with an SDK's backoff, ask certstorm plan --devices {pr['devices']} --window "
              f"{pr['window_s']:g}s --backoff azure-c: it simulates the storm for each core count."),
        _table("Managed services at the same rate", ("reference", "units needed", "possible", "throttle"),
               [(r["service"], _fmt(r["units"], "", 0, "n/a"), "yes" if r["possible"] else "no", r["note"])
                for r in pr["references"]])]))
    return [{"title": t, "id": t.lower().replace(" ", "-"), "blocks": b} for t, b in out]


def build_report(run_dir) -> dict:
    run_dir = Path(run_dir)
    summary = summarise(run_dir)
    samples = _load(run_dir / "raw" / "timeline.json", [])
    plots = _plots(run_dir, summary, samples)
    content = sections(summary, plots)
    images = {name: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for name, p in plots.items()}
    page = {"run_id": summary["run_id"], "headline": summary["first_line"], "notes": summary["notes"],
            "sections": content}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")
    (run_dir / "report.md").write_text(markdown_template.render(**page))
    (run_dir / "report.html").write_text(html_template.render(images=images, **page))
    return summary


def report_command(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / "raw").is_dir():
        print(f"error: {run_dir} has no raw/ folder; is it a certstorm run directory?")
        return 2
    summary = build_report(run_dir)
    print(summary["first_line"])
    print(f"report: {run_dir / 'report.html'}")
    return 0


__all__ = ["MILESTONES", "SECTIONS", "build_report", "report_command", "sections", "strict", "summarise"]
