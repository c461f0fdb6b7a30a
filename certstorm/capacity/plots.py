"""The report's plots, one function per figure, drawn with matplotlib into ``plots/`` of the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from certstorm.capacity import analysis
from certstorm.capacity.planner import USL
from certstorm.capacity.summary import load
from certstorm.capacity.windows import series

__all__ = ["draw_plots"]


def draw_plots(run_dir: Path, summary: dict) -> dict[str, Path]:
    """Every figure the run's data allows: {name: PNG path}."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made: dict[str, Path] = {}
    _timeline(run_dir, summary, out_dir, made)
    _latency(summary, out_dir, made)
    _storm(run_dir, summary, out_dir, made)
    _scaling(summary, out_dir, made)
    return made


def _segment_series(run_dir: Path, summary: dict) -> dict[str, list[dict]]:
    raw, config = run_dir / "raw", summary["config"]
    out = {}
    for v in summary["per_segment"]:
        name = v["segment"]
        out[name] = series(
            load(raw / f"{name}-seconds.json", []),
            load(raw / f"{name}-samples.json", []),
            origin=config.get("origin", 0.0),
            target_cores=v.get("target_cores"),
        )
    return out


def _label(v: dict) -> str:
    return f"{v['workers']} hub worker(s)" if v.get("workers") else "target"


def _timeline(run_dir: Path, summary: dict, out_dir: Path, made: dict[str, Path]) -> None:
    """Rates, CPU and p99 over time, second by second; one line per search, none across a restart."""
    import matplotlib.pyplot as plt

    data = _segment_series(run_dir, summary)
    if not any(data.values()):
        return
    noun = summary["target"]["noun"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for v in summary["per_segment"]:
        rows, label = data.get(v["segment"], []), _label(v)
        if not rows:
            continue
        t = [r["t"] for r in rows]
        ax1.plot(t, [r["admitted"] for r in rows], label=f"admitted/s, {label}")
        ax1.plot(t, [r["failed"] for r in rows], ":", label=f"failed/s, {label}")
        if any(r["target_cpu"] is not None for r in rows):
            ax2.plot(
                t,
                [None if r["target_cpu"] is None else 100 * r["target_cpu"] for r in rows],
                label=f"{noun} CPU %, {label}",
            )
        for worker in sorted({w for r in rows for w in r["gen"]}, key=int):
            ax2.plot(
                t,
                [100 * r["gen"][worker] if worker in r["gen"] else None for r in rows],
                "--",
                lw=0.8,
                label=f"generator {worker} CPU %, {label}",
            )
    for s in summary["steps"]:
        if s["target"] is not None:
            ax1.hlines(s["target"], s["start"], s["end"], colors="grey", lw=0.8)
        if s["p99"] is not None:
            ax3.hlines(s["p99"], s["start"], s["end"], colors="C3" if s["stage"] != "ceiling" else "C4", lw=2)
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


def _latency(summary: dict, out_dir: Path, made: dict[str, Path]) -> None:
    """Latency and CPU per authentication against the admitted rate, with the fitted cost lines."""
    import matplotlib.pyplot as plt

    steps = analysis.paced(summary["steps"])
    if not steps:
        return
    noun = summary["target"]["noun"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for v in summary["per_segment"]:
        ss = [s for s in steps if s["segment"] == v["segment"]]
        label = _label(v)
        ws = sorted((s for s in ss if s["p99"] is not None), key=lambda s: s["achieved"])
        x = [s["achieved"] for s in ws]
        ax1.plot(x, [s["p99"] for s in ws], "o-", label=f"p99, {label}")
        ax1.plot(x, [s["p50"] for s in ws], "x:", label=f"p50, {label}")
        cs = sorted((s for s in ss if s["target_us_per_auth"]), key=lambda s: s["achieved"])
        if cs:
            ax2.plot([s["achieved"] for s in cs], [s["target_us_per_auth"] for s in cs], "o", label=f"{noun}, {label}")
        gs = sorted((s for s in ss if s["gen_us_per_auth"]), key=lambda s: s["achieved"])
        ax2.plot([s["achieved"] for s in gs], [s["gen_us_per_auth"] for s in gs], "x", label=f"generator, {label}")
        for cost, style in ((v.get("cost"), "-"), (v.get("generator_cost"), ":")):
            if cost and x:
                grid = np.linspace(max(1.0, min(x)), max(x), 30)
                ax2.plot(grid, [analysis.cores_for(r, cost) / r * 1e6 for r in grid], style, lw=0.8, color="grey")
    ax1.axhline(summary["slo_p99_ms"], color="red", lw=0.8, ls="--", label="SLO")
    ax1.set_yscale("log")
    ax1.set_xlabel("admitted authentications/s")
    ax1.set_ylabel("whole authentication, ms")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("admitted authentications/s")
    ax2.set_ylabel("CPU µs per authentication\n(grey: fixed part + slope)")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=7)
    _save(fig, out_dir, "latency", made)


def _storm(run_dir: Path, summary: dict, out_dir: Path, made: dict[str, Path]) -> None:
    """The storm's admissions over time, measured beside simulated; below, the attempts in flight on the
    device side and what the hub held, measured beside simulated."""
    import matplotlib.pyplot as plt

    storm = summary.get("storm")
    if not storm:
        return
    raw = load(run_dir / "raw" / "storm.json", {})
    curve = np.array(raw.get("curve", []), dtype=float)
    flight = raw.get("in_flight") or {}
    predicted = storm.get("predicted") or {}
    two = bool(flight.get("mean"))
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(9, 7 if two else 4), sharex=True)
    ax = axes[0] if two else axes
    if curve.size:
        ax.plot(curve[:, 0], curve[:, 1], label="measured")
    if predicted.get("curve"):
        p = np.array(predicted["curve"], dtype=float)
        ax.plot(p[:, 0], p[:, 1], "--", label="simulated from the quota and the measured attempt rate")
    ax.axhline(storm["devices"], color="grey", lw=0.8, ls=":")
    ax.set_ylabel("devices admitted")
    ax.legend()
    if two:
        ax2 = axes[1]
        step = flight.get("bucket_s", 0.1)
        mean = np.array([np.nan if v is None else v for v in flight["mean"]], dtype=float)
        ax2.plot((np.arange(mean.size) + 1) * step, mean, lw=0.8, label="device side, measured")
        if predicted.get("in_flight"):
            p = np.array(predicted["in_flight"], dtype=float)
            ax2.plot(p[:, 0], p[:, 1], "--", lw=0.8, label="device side, simulated")
        key = "handshakes" if storm.get("transport") == "mqtts" else "pending_challenges"
        hub = [(r["t"], r[key]) for r in raw.get("hub", []) if r.get(key) is not None]
        if hub:
            h = np.array(hub, dtype=float)
            ax2.plot(h[:, 0], h[:, 1], ".-", lw=0.8, label="hub side, measured (its gauge)")
        if predicted.get("hub_in_flight"):
            p = np.array(predicted["hub_in_flight"], dtype=float)
            ax2.plot(p[:, 0], p[:, 1], ":", lw=0.8, label="hub side, simulated")
        ax2.set_ylabel("attempts in flight")
        ax2.legend(fontsize="small")
        ax2.set_xlabel("seconds since the outage ended")
    else:
        ax.set_xlabel("seconds since the outage ended")
    _save(fig, out_dir, "storm", made)


def _scaling(summary: dict, out_dir: Path, made: dict[str, Path]) -> None:
    """Hub-limited knees by worker count with the USL fit."""
    import matplotlib.pyplot as plt

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


def _save(fig, out_dir: Path, name: str, made: dict[str, Path]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    made[name] = out_dir / f"{name}.png"
    fig.savefig(made[name], dpi=80)
    plt.close(fig)
