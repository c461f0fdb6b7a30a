"""Turn a run directory's raw data into ``summary.json``, ``report.md`` and a self-contained ``report.html``.

``certstorm report results/<run>`` calls :func:`build_report` again at any time: nothing in the report is
kept that the raw files do not hold. The raw files a run writes under ``raw/``:

* ``config.json`` — what was asked for (devices, shape, SLO, worker counts, backoff, quota, projection);
* ``floor.json`` — ``{"verify_us": …}``: one raw P-256 verify measured in this run;
* ``timeline.json`` — the samples described in :mod:`bench.capacity.analysis`;
* ``storm.json`` — the reconnect storm: ``{"devices", "capacity", "backoff", "curve": [[t, admitted], …],
  "retries"}`` (optional);
* ``phases.json`` — per-phase latency percentiles in µs from the swarm's own histograms (optional).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.capacity import analysis
from bench.capacity.planner import simulate_storm

SECTIONS = ("Verdict", "Saturation knee", "Cost per authentication", "Latency", "Over time",
            "Reconnect storm", "Scaling", "Projections", "Predicted versus measured")


def _load(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def summarise(run_dir: Path) -> dict:
    raw = run_dir / "raw"
    config = _load(raw / "config.json", {})
    floor = _load(raw / "floor.json", {})
    samples = _load(raw / "timeline.json", [])
    storm = _load(raw / "storm.json")
    phases = _load(raw / "phases.json", {})
    slo = float(config.get("slo_p99_ms", 500))
    hub_cores = {int(k): float(v) for k, v in config.get("hub_cores", {}).items()}
    steps = analysis.steps_from_samples(samples, hub_cores)
    k = analysis.knee(steps, slo)
    limit = analysis.limiting_side(steps)
    verify_us = floor.get("verify_us")
    floor_us = 2 * verify_us if verify_us else None

    hub_us = None
    if k and k.hub_us_per_auth:
        hub_us = k.hub_us_per_auth
    elif steps:
        costs = [s.hub_us_per_auth for s in steps if s.hub_us_per_auth]
        hub_us = float(np.median(costs)) if costs else None

    points = analysis.capacity_by_workers(steps, slo) if steps else {}
    scale = analysis.scaling(points) if points else None
    if scale and limit != "hub":
        # The hub never saturated, so these rates measure the generator: no scaling law is fitted to them.
        scale = analysis.Scaling(points, None, "no USL fit: the hub never saturated in this run, so the "
                                 "rates per worker count measure the load generator, not the hub",
                                 scale.predicted_from_fewer)
    per_core, basis = None, ""
    if limit == "hub" and k:
        per_core = k.achieved / hub_cores.get(k.workers, k.workers)
        basis = "the knee's admissions per hub core"
    elif hub_us:
        per_core = analysis.CPU_LIMIT * 1e6 / hub_us
        basis = (f"hub CPU per authentication ({hub_us:,.0f} µs) with a core {analysis.CPU_LIMIT:.0%} busy, "
                 "because the hub never saturated")

    projection = config.get("projection", {"devices": 2_000_000, "window_s": 600})
    rate = projection["devices"] / projection["window_s"]
    cores = analysis.cores_needed(rate, per_core or 0, scale.usl if scale else None) if per_core else None

    storm_out = None
    if storm and storm.get("curve"):
        curve = np.array(storm["curve"], dtype=float)
        devices = int(storm["devices"])
        done = curve[curve[:, 1] >= devices]
        measured_tta = float(done[0, 0]) if done.size else math.inf
        capacity = float(storm.get("capacity") or (k.achieved if k else 0)) or None
        predicted = None
        if capacity:
            from loadgen._backoff import preset  # the swarm's own presets, so both sides retry alike
            sim = simulate_storm(devices, capacity, preset(storm.get("backoff") or "none").vectorized(),
                                 latency=(k.p50 / 1000 if k else 0.005), attempt_rate=storm.get("attempt_rate"))
            predicted = {"time_to_admit": sim.time_to_admit, "peak_pending": sim.peak_pending_challenges,
                         "curve": [[float(t), int(a)] for t, a in zip(sim.curve_t[::10], sim.curve_admitted[::10])]}
        storm_out = {
            "devices": devices, "capacity": capacity, "backoff": storm.get("backoff"),
            "retries": storm.get("retries"), "attempt_rate": storm.get("attempt_rate"),
            "measured_time_to_admit": measured_tta,
            "admitted": int(curve[-1, 1]) if curve.size else 0,
            "predicted": predicted,
            "error": (predicted["time_to_admit"] / measured_tta - 1)
            if predicted and math.isfinite(measured_tta) and measured_tta > 0 else None,
        }

    first_line = (
        ("Neither side saturated" if limit == "neither" else
         f"Limited by the {'load generator, not the hub' if limit == 'generator' else limit}") + ": "
        + (f"knee at {k.achieved:,.0f} authentications/s with {k.workers} hub worker(s)" if k
           else "no load level met the SLO")
    )
    transport = config.get("transport", "http")
    if transport == "mqtts":  # a plan must say how devices connected: a TLS handshake costs far more
        first_line += "; devices over MQTT with mutual TLS"
    if limit == "generator":
        first_line = "GENERATOR-LIMITED RUN: " + first_line
    return {
        "run_id": run_dir.name,
        "first_line": first_line,
        "transport": transport,
        "limit": limit,
        "slo_p99_ms": slo,
        "knee": asdict(k) if k else None,
        "hub_us_per_auth": hub_us,
        "floor_us": floor_us,
        "floor_multiple": hub_us / floor_us if hub_us and floor_us else None,
        "latency_ms": {key: getattr(k, key) for key in ("p50", "p90", "p99", "p999")} if k else None,
        "phases_us": phases,
        "steps": analysis.summarise_steps(steps),
        "storm": storm_out,
        "scaling": {
            "points": points, "note": scale.note if scale else "no steps measured",
            "usl": asdict(scale.usl) if scale and scale.usl else None,
            "peak_workers": scale.usl.peak_workers if scale and scale.usl else None,
            "predicted_from_fewer": scale.predicted_from_fewer if scale else None,
        },
        "projection": {**projection, "rate": rate, "per_core": per_core, "cores": cores, "basis": basis,
                       "p99_ms": slo, "references": analysis.cloud_references(rate)},
        "config": config,
    }


# -- plots ----------------------------------------------------------------------------------------

def _plots(run_dir: Path, summary: dict, samples: list[dict]) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made: dict[str, Path] = {}

    if len(samples) > 1:
        t = np.array([s["t"] for s in samples])
        dt = np.diff(t)
        dt[dt <= 0] = 1e-9

        def rate(key):
            return np.diff(np.array([s[key] for s in samples], dtype=float)) / dt

        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        ax1.plot(t[1:], rate("ok"), label="admitted/s")
        ax1.plot(t[1:], [s["target"] for s in samples[1:]], "--", label="intended/s", alpha=0.7)
        ax1.plot(t[1:], rate("errors"), label="errors/s")
        ax1.set_ylabel("authentications/s")
        ax1.legend(loc="upper left")
        cores = max(1.0, float(max(summary["config"].get("hub_cores", {"1": 1}).values(), default=1)))
        ax2.plot(t[1:], 100 * rate("hub_cpu") / cores, label="hub CPU %")
        ax2.plot(t[1:], 100 * rate("gen_cpu"), label="generator CPU % (one core)")
        ax2.axhline(85, color="grey", lw=0.8, ls=":")
        ax2.set_ylabel("CPU %")
        ax2.set_xlabel("seconds")
        ax2.legend(loc="upper left")
        _save(fig, out_dir, "timeline", made)

    steps = summary["steps"]
    if steps:
        fig, ax = plt.subplots(figsize=(9, 4))
        for w in sorted({s["workers"] for s in steps}):
            ws = [s for s in steps if s["workers"] == w]
            x = [s["achieved"] for s in ws]
            ax.plot(x, [s["p99"] for s in ws], "o-", label=f"p99, {w} worker(s)")
            ax.plot(x, [s["p50"] for s in ws], "x:", label=f"p50, {w} worker(s)")
        ax.axhline(summary["slo_p99_ms"], color="red", lw=0.8, ls="--", label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("admitted authentications/s")
        ax.set_ylabel("latency, ms (whole authentication)")
        ax.legend()
        _save(fig, out_dir, "latency", made)

    storm = summary.get("storm")
    if storm:
        raw = _load(run_dir / "raw" / "storm.json", {})
        curve = np.array(raw.get("curve", []), dtype=float)
        fig, ax = plt.subplots(figsize=(9, 4))
        if curve.size:
            ax.plot(curve[:, 0], curve[:, 1], label="measured")
        if storm.get("predicted"):
            p = np.array(storm["predicted"]["curve"], dtype=float)
            if p.size:
                ax.plot(p[:, 0], p[:, 1], "--", label="simulated from measured capacity")
        ax.axhline(storm["devices"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("seconds since the outage ended")
        ax.set_ylabel("devices admitted")
        ax.legend()
        _save(fig, out_dir, "storm", made)

    sc = summary["scaling"]
    if sc["points"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        n = sorted(int(k) for k in sc["points"])
        ax.plot(n, [sc["points"][k] for k in n], "o", label="measured capacity")
        if sc["usl"]:
            from bench.capacity.planner import USL
            model = USL(**sc["usl"])
            grid = np.linspace(1, max(n) * 2, 50)
            ax.plot(grid, model.throughput(grid), "-", label="USL fit")
        elif n:
            per = sc["points"][n[0]] / n[0]
            ax.plot([1, max(n) * 2], [per, per * max(n) * 2], ":", label="linear from fewest workers")
        ax.set_xlabel("hub workers")
        ax.set_ylabel("authentications/s")
        ax.legend()
        _save(fig, out_dir, "scaling", made)
    return made


def _save(fig, out_dir: Path, name: str, made: dict[str, Path]) -> None:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    made[name] = out_dir / f"{name}.png"
    fig.savefig(made[name], dpi=90)
    plt.close(fig)


# -- text -----------------------------------------------------------------------------------------

def _fmt(x, unit="", digits=0):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:,.{digits}f}{unit}"


def _markdown(summary: dict, plots: dict[str, Path]) -> str:
    k = summary["knee"]
    lines = [f"# certstorm run {summary['run_id']}", "", f"**{summary['first_line']}**", ""]
    reason = {
        "hub": "the hub reached 85% CPU, or fell short of the intended rate, first",
        "generator": "a generator process reached 85% CPU first, or the intended rate was not delivered while "
                     "the hub still had CPU to spare",
        "neither": "every intended rate was delivered with both sides below 85% CPU: push harder to find the knee",
    }.get(summary["limit"], "")
    lines += ["## Verdict", "",
              f"- Saturated side: **{summary['limit']}** ({reason}).",
              f"- SLO: p99 ≤ {summary['slo_p99_ms']:g} ms, errors ≤ 0.1%, hub CPU ≤ 85%.", ""]
    lines += ["## Saturation knee", ""]
    if k:
        lines.append(f"{_fmt(k['achieved'])} authentications/s with {k['workers']} hub worker(s): p99 "
                     f"{_fmt(k['p99'])} ms, errors {k['error_rate']:.3%}, hub CPU {k['hub_cpu']:.0%}, "
                     f"generator CPU {k['gen_cpu']:.0%}.")
    else:
        lines.append("No load level met the SLO.")
    lines += ["", "| workers | intended/s | admitted/s | errors | hub CPU | gen CPU | p50 ms | p99 ms | hub µs/auth |",
              "|---|---|---|---|---|---|---|---|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['workers']} | {_fmt(s['target'])} | {_fmt(s['achieved'])} | {s['error_rate']:.2%} | "
                     f"{s['hub_cpu']:.0%} | {s['gen_cpu']:.0%} | {_fmt(s['p50'])} | {_fmt(s['p99'])} | "
                     f"{_fmt(s['hub_us_per_auth'])} |")
    lines += ["", "## Cost per authentication", "",
              f"Hub CPU per authentication (both requests): **{_fmt(summary['hub_us_per_auth'])} µs**; "
              f"the crypto floor (two raw P-256 verifies, measured in this run) is {_fmt(summary['floor_us'])} µs, "
              f"so the hub spends **{_fmt(summary['floor_multiple'], '×', 2)}** the floor.", ""]
    lines += ["## Latency", ""]
    if summary["latency_ms"]:
        lat = summary["latency_ms"]
        lines.append(f"At the knee, whole authentication: p50 {_fmt(lat['p50'])} ms, p90 {_fmt(lat['p90'])} ms, "
                     f"p99 {_fmt(lat['p99'])} ms, p99.9 {_fmt(lat['p999'])} ms (Locust, whole milliseconds).")
    if summary["phases_us"]:
        lines += ["", "| phase | p50 µs | p90 µs | p99 µs | p99.9 µs |", "|---|---|---|---|---|"]
        for name, p in summary["phases_us"].items():
            lines.append(f"| {name} | {_fmt(p.get('p50'))} | {_fmt(p.get('p90'))} | {_fmt(p.get('p99'))} | "
                         f"{_fmt(p.get('p999'))} |")
    if "latency" in plots:
        lines += ["", "![latency](plots/latency.png)"]
    lines += ["", "## Over time", ""]
    lines.append("![timeline](plots/timeline.png)" if "timeline" in plots else "No timeline recorded.")
    lines += ["", "## Reconnect storm", ""]
    st = summary["storm"]
    if st:
        lines.append(f"{st['devices']:,} devices reconnecting at once against {_fmt(st['capacity'])} admissions/s, "
                     f"backoff `{st['backoff']}`: all admitted after {_fmt(st['measured_time_to_admit'], ' s', 1)} "
                     f"({_fmt(st['retries'])} retries).")
        if "storm" in plots:
            lines += ["", "![storm](plots/storm.png)"]
    else:
        lines.append("No storm in this run.")
    sc = summary["scaling"]
    lines += ["", "## Scaling", "", sc["note"] + "."]
    if sc["usl"]:
        u = sc["usl"]
        lines.append(f"USL: γ = {u['gamma']:,.0f}/s, α = {u['alpha']:.4f}, β = {u['beta']:.5f}; peak at "
                     f"{_fmt(sc['peak_workers'], '', 1)} workers.")
    lines.append("Capacity by workers: " + ", ".join(f"{w}: {_fmt(v)}/s" for w, v in sc["points"].items()))
    if "scaling" in plots:
        lines += ["", "![scaling](plots/scaling.png)"]
    pr = summary["projection"]
    lines += ["", "## Projections", "",
              f"To admit {pr['devices']:,} devices within {pr['window_s'] / 60:g} min at p99 ≤ {pr['p99_ms']:g} ms "
              f"({_fmt(pr['rate'])} admissions/s) you need **{_fmt(pr['cores'])} hub core(s)** of this machine "
              f"({_fmt(pr['per_core'])}/s per core, from {pr.get('basis') or 'no measurement'}).", "",
              "| reference | units needed | possible | throttle |", "|---|---|---|---|"]
    for r in pr["references"]:
        lines.append(f"| {r['service']} | {_fmt(r['units'])} | {'yes' if r['possible'] else 'no'} | {r['note']} |")
    lines += ["", "## Predicted versus measured", ""]
    if st and st.get("predicted"):
        cap = (f", with attempts capped at the swarm's measured {_fmt(st['attempt_rate'])}/s as its connection "
               "slots cap them" if st.get("attempt_rate") else "")
        lines.append(f"Storm time-to-admit: simulated {_fmt(st['predicted']['time_to_admit'], ' s', 1)} from the measured "
                     f"capacity{cap}, measured {_fmt(st['measured_time_to_admit'], ' s', 1)}: error "
                     f"{_fmt(100 * st['error'] if st['error'] is not None else None, '%', 1)}. Peak pending "
                     f"challenges (simulated): {_fmt(st['predicted']['peak_pending'])}.")
    pf = sc.get("predicted_from_fewer")
    if pf:
        lines.append(f"Throughput at {pf['workers']} workers predicted from fewer: {_fmt(pf['predicted'])}/s, measured "
                     f"{_fmt(pf['measured'])}/s: error {_fmt(100 * pf['error'] if pf['error'] is not None else None, '%', 1)}.")
    if not (st and st.get("predicted")) and not pf:
        lines.append("Nothing to compare: the run measured one worker count and no storm.")
    return "\n".join(lines) + "\n"


def _html(markdown_text: str, plots: dict[str, Path]) -> str:
    """A self-contained page: the markdown's structure as HTML, the plots inlined as data URIs."""
    images = {f"plots/{p.name}": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
              for p in plots.values()}
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            out = ["<table>", "<tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>"]
            out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]]
            body.append("\n".join(out + ["</table>"]))
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            title = line[3:]
            body.append(f'<h2 id="{title.lower().replace(" ", "-")}">{html.escape(title)}</h2>')
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            body.append(f'<img alt="{html.escape(alt)}" src="{images.get(src[:-1], src[:-1])}">')
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}img{max-width:100%}h1{font-size:1.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>certstorm report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def build_report(run_dir) -> dict:
    run_dir = Path(run_dir)
    summary = summarise(run_dir)
    samples = _load(run_dir / "raw" / "timeline.json", [])
    plots = _plots(run_dir, summary, samples)
    text = _markdown(summary, plots)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    (run_dir / "report.md").write_text(text)
    (run_dir / "report.html").write_text(_html(text, plots))
    return summary


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(type(value).__name__)


def report_command(args) -> int:
    run_dir = Path(args.run)
    if not (run_dir / "raw").is_dir():
        print(f"error: {run_dir} has no raw/ folder; is it a certstorm run directory?")
        return 2
    summary = build_report(run_dir)
    print(summary["first_line"])
    print(f"report: {run_dir / 'report.html'}")
    return 0
