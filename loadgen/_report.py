"""Merge the per-process reports of a swarm run into one summary, and write the results directory.

Layout of ``RESULTS_DIR/RUN_ID/``:

* ``summary.json`` -- the run: options, hub and CA, counts, failures by hub error code, µs percentiles of
  every phase, generator CPU per process and the generator-limit verdict, intended versus achieved rate
  (steady, step), the admission curve (storm), devices online (churn), device distinctness;
* ``histograms.npz`` -- the merged µs histograms (dense bucket counts, see ``loadgen._histo``), so runs
  can be compared or re-merged later;
* ``worker-<index>.json`` -- each process's own report, as it sent it.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np

from loadgen._histo import Histogram, merge_all
from loadgen._recorder import COSTS, HISTOGRAMS, summarize_timeline

CPU_LIMIT = 0.85


def _unpack_bits(text: str, n: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


def merge_reports(reports: dict, meta: dict) -> tuple[dict, dict[str, Histogram]]:
    """``reports``: worker index -> report (``Recorder.to_dict``); ``meta``: run facts from the master."""
    fleet_count = meta["fleet"]["count"]
    hists: dict[str, Histogram] = {}
    # the transports' own histograms (e.g. the provisioning step's, loadgen/_provision.py) after the common ones
    extra = sorted({name for r in reports.values() for name in r["histograms"]} - set(HISTOGRAMS))
    for name in (*HISTOGRAMS, *extra):
        hists[name] = merge_all(
            Histogram.from_dict(r["histograms"][name]) for r in reports.values() if name in r["histograms"]
        )
    phases: dict[int, Histogram] = {}
    for r in reports.values():
        for k, h in r.get("phase_histograms", {}).items():
            phases.setdefault(int(k), Histogram()).merge(Histogram.from_dict(h))

    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    costs = {name: [0, 0] for name in COSTS}
    timeline: dict[int, list[int]] = {}
    curve: dict[int, list[int]] = {}
    online: dict[int, int] = {}
    union = np.zeros(fleet_count, dtype=bool)
    per_worker_admitted = 0
    first_pass = dup = 0
    cpu = {}
    for idx, r in sorted(reports.items()):
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
        for k, (ns, n) in r["costs"].items():
            costs[k][0] += ns
            costs[k][1] += n
        for s, row in r["timeline"].items():
            acc = timeline.setdefault(int(s), [0, 0, 0, 0])
            for i, v in enumerate(row):
                acc[i] += v
        for b, row in r["curve"].items():
            acc = curve.setdefault(int(b), [0, 0, 0])
            for i, v in enumerate(row):
                acc[i] += v
        for s, d in r["online_delta"].items():
            online[int(s)] = online.get(int(s), 0) + d
        bits = _unpack_bits(r["admitted_bits"], fleet_count)
        per_worker_admitted += int(bits.sum())
        union |= bits
        first_pass += r["first_pass_admissions"]
        dup += r["duplicate_in_pass"]
        cpu[str(idx)] = r["cpu"]

    admitted = counts.get("admitted", 0)
    failed = counts.get("failed", 0)
    distinct = int(union.sum())
    summary = dict(meta)
    summary["authentications"] = {
        "admitted": admitted,
        "failed_attempts": failed,
        "first_connection": counts.get("first_connection", 0),
        "retries": counts.get("retries", 0),
        "gave_up": counts.get("gave_up", 0),
        "reconnects": counts.get("reconnects", 0),
        "failures_by_code": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
        # the mqtts transport's own counts (loadgen/_mqtt.py), when it ran
        **{k: counts[k] for k in ("resumed_offers", "held", "hold_dropped") if k in counts},
    }
    summary["devices"] = {
        "distinct_admitted": distinct,
        "first_pass_admissions": first_pass,
        "duplicates_within_a_pass": dup + (per_worker_admitted - distinct),
        "all_distinct": dup == 0 and per_worker_admitted == distinct and first_pass == distinct,
    }
    provisioning = _provisioning(counts)
    if provisioning:
        summary["provisioning"] = provisioning
    summary["latency_us"] = {name: h.summary() for name, h in hists.items()}
    summary["generator_cost_us_per_auth"] = _costs(costs, cpu, admitted + failed)
    summary["generator_cpu"] = cpu
    summary["generator_limited"], summary["generator_verdict"] = _cpu_verdict(cpu)
    tl = summarize_timeline(timeline)
    summary["timeline"] = tl
    run = summary.get("run", {})
    summary["rates"] = _rates(tl, run.get("t0"), meta.get("phases") or [], phases)
    summary["in_flight"] = _in_flight(reports)
    if curve:
        summary["admission_curve"] = _curve(curve, meta)
    if online:
        summary["devices_online"] = _online(online, tl)
    return summary, hists


def spread(counts: dict[str, int]) -> dict:
    """How devices spread over hubs: counts, and the fairness of the spread -- Jain's index (1 is perfectly
    even, 1/n all on one hub), the largest share over the mean, and the coefficient of variation."""
    values = list(counts.values())
    n, total = len(values), sum(values)
    if not n or not total:
        return {"hubs": dict(counts), "jain_index": None, "max_over_mean": None, "cv": None}
    mean = total / n
    return {
        "hubs": dict(sorted(counts.items())),
        "jain_index": round(total * total / (n * sum(v * v for v in values)), 4),
        "max_over_mean": round(max(values) / mean, 4),
        "cv": round((sum((v - mean) ** 2 for v in values) / n) ** 0.5 / mean, 4),
    }


def _provisioning(counts: dict) -> dict | None:
    """The provisioning step's counts (loadgen/_provision.py): where devices went, how, how many polls."""
    hubs = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dps_hub:")}
    if not hubs:
        return None
    assigned = sum(hubs.values())
    return {
        "assigned": assigned,
        "substatus": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("dps_substatus:")},
        "polls_per_registration": round(counts.get("dps_polls", 0) / assigned, 3),
        "spread": spread(hubs),
    }


def _costs(costs: dict, cpu: dict, attempts: int) -> dict:
    out = {name: (round(ns / n / 1000.0, 2) if n else None) for name, (ns, n) in costs.items()}
    cpu_s = sum(c.get("window_cpu_s", 0.0) for c in cpu.values())
    if attempts and cpu_s:
        total = cpu_s / attempts * 1e6
        measured = sum(v for v in out.values() if v)
        out["process_cpu_per_attempt"] = round(total, 1)
        out["io_scheduling_and_stats"] = round(total - measured, 1)
        out["attempts_per_generator_core_second"] = round(attempts / cpu_s, 1)
        out["note"] = (
            "prepare/parse/sign/build are timed around code that never yields; the rest of the "
            "process CPU per attempt is socket I/O, gevent scheduling and Locust's statistics"
        )
    return out


def _cpu_verdict(cpu: dict) -> tuple[bool, str]:
    busy = {k: c for k, c in cpu.items() if (c.get("utilization") or 0) >= CPU_LIMIT}
    if busy:
        names = ", ".join(f"worker {k} at {c['utilization']:.0%}" for k, c in busy.items())
        return True, (
            f"THE GENERATOR, NOT THE HUB, WAS THE LIMIT: {names} of a core during the measurement "
            f"(>= {CPU_LIMIT:.0%}). Add Locust worker processes or machines before reading these "
            f"figures as the hub's."
        )
    peaks = {k: c for k, c in cpu.items() if (c.get("peak_5s_utilization") or 0) >= CPU_LIMIT}
    if peaks:
        names = ", ".join(f"worker {k} peaked at {c['peak_5s_utilization']:.0%}" for k, c in peaks.items())
        return False, (
            f"generator below {CPU_LIMIT:.0%} CPU on average, but {names} over 5 s: "
            f"treat the busiest stretch with suspicion"
        )
    top = max((c.get("utilization") or 0 for c in cpu.values()), default=0)
    return False, f"generator not the limit (busiest process at {top:.0%} of a core)"


def _rates(tl: dict, t0: float | None, phases: list[dict], phase_hists: dict[int, Histogram]) -> dict:
    if not tl or t0 is None:
        return {}
    start = tl["start_epoch_s"]
    out = []
    for ph in phases:
        lo = t0 + ph["start"]
        hi = t0 + (ph["end"] if ph["end"] is not None else (start + len(tl["admitted"]) - t0))
        # whole seconds fully inside the phase (skip the ramp-up second and the partial last one)
        s0, s1 = math.ceil(lo), math.floor(hi)
        i0, i1 = max(0, s0 - start), max(0, min(len(tl["admitted"]), s1 - start))
        secs = i1 - i0
        row = {"phase": ph["phase"], "target_rate": ph["rate"], "seconds": secs}
        if secs > 0:
            row["intended_rate"] = round(sum(tl["intended"][i0:i1]) / secs, 1)
            row["achieved_rate"] = round(sum(tl["admitted"][i0:i1]) / secs, 1)
            row["failed_rate"] = round(sum(tl["failed"][i0:i1]) / secs, 1)
        elif hi > lo:
            # a phase shorter than its whole seconds: weight each second by its overlap with the phase
            weights = {s: min(s + 1, hi) - max(s, lo) for s in range(math.floor(lo), math.ceil(hi))}
            total = sum(w for w in weights.values() if w > 0)
            row["seconds"] = round(hi - lo, 3)

            def rate(col, weights=weights, total=total):
                n = len(tl[col])
                return round(
                    sum(w * tl[col][s - start] for s, w in weights.items() if w > 0 and 0 <= s - start < n) / total, 1
                )

            row.update(intended_rate=rate("intended"), achieved_rate=rate("admitted"), failed_rate=rate("failed"))
        h = phase_hists.get(ph["phase"])
        if h is not None and h.count:
            row.update(
                {f"auth_p{q}_us".replace(".", ""): h.percentile(q) for q in (50, 90, 99, 99.9)}, auth_count=h.count
            )
        out.append(row)
    return {"phases": out}


def _curve(curve: dict[int, list[int]], meta: dict) -> dict:
    last = max(curve)
    attempts = np.zeros(last + 1, dtype=np.int64)
    admitted = np.zeros(last + 1, dtype=np.int64)
    refused = np.zeros(last + 1, dtype=np.int64)
    for b, (a, ok, ref) in curve.items():
        if b >= 0:
            attempts[b], admitted[b], refused[b] = a, ok, ref
    cum = np.cumsum(admitted)
    devices = meta.get("shape", {}).get("devices") or int(cum[-1])
    out = {
        "bucket_s": 0.1,
        "attempts": attempts.tolist(),
        "admitted": admitted.tolist(),
        "refused": refused.tolist(),
        "admitted_cumulative": cum.tolist(),
        "devices": devices,
    }
    for frac in (0.5, 0.9, 0.99, 1.0):
        target = math.ceil(devices * frac)
        i = int(np.searchsorted(cum, target, side="left"))
        out[f"time_to_{int(frac * 100)}pct_s"] = round((i + 1) * 0.1, 1) if i < cum.size else None
    return out


def _in_flight(reports: dict) -> dict:
    """Authentications in flight per 0.1 s since t0 (each process's mean over its samples, summed over the
    processes), the attempts that ended in each bucket with their mean duration, and what the devices waited
    (--device-profile, --network): the two sides of Little's law, measured."""
    mean: dict[int, float] = {}
    ended: dict[int, list[float]] = {}
    waited = {"sign": [0.0, 0], "rtt": [0.0, 0]}
    for r in reports.values():
        for b, (total, n) in r.get("in_flight", {}).items():
            if n:
                mean[int(b)] = mean.get(int(b), 0.0) + total / n
        for b, (seconds, n) in r.get("attempt_time", {}).items():
            row = ended.setdefault(int(b), [0.0, 0])
            row[0] += seconds
            row[1] += n
        for kind, (seconds, n) in r.get("waited", {}).items():
            waited[kind][0] += seconds
            waited[kind][1] += n
    if not mean and not ended:
        return {}
    last = max([*mean, *ended])
    attempts = [ended.get(b, [0.0, 0])[1] for b in range(last + 1)]
    seconds = [round(ended.get(b, [0.0, 0])[0], 6) for b in range(last + 1)]
    return {
        "bucket_s": 0.1,
        # None: no process sampled in that 0.1 s (its sampler did not get the CPU), not zero in flight
        "mean": [round(mean[b], 4) if b in mean else None for b in range(last + 1)],
        "attempts_ended": attempts,
        "attempt_seconds": seconds,
        "mean_attempt_s": sum(seconds) / sum(attempts) if sum(attempts) else None,
        "waited": {
            kind: {"count": n, "mean_s": round(total / n, 6) if n else None} for kind, (total, n) in waited.items()
        },
    }


def _online(online: dict[int, int], tl: dict) -> dict:
    start = min(online)
    end = start + len(tl.get("admitted", [])) if tl else max(online) + 1
    end = max(end, start + 1)
    series = np.cumsum([online.get(s, 0) for s in range(start, end)])
    return {"start_epoch_s": start, "online": series.tolist(), "peak": int(series.max()) if series.size else 0}


def write_results(directory: Path, summary: dict, hists: dict[str, Histogram]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "summary.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    arrays = {}
    for name, h in hists.items():
        h.flush()
        arrays[name] = h.counts
        arrays[f"{name}__stats"] = np.asarray([h.count, h.total, h.min or 0, h.max or 0], dtype=np.int64)
    np.savez_compressed(directory / "histograms.npz", **arrays)
    write_latency_csv(directory / "latency_us.csv", summary.get("latency_us", {}))
    return path


LATENCY_COLUMNS = ("count", "min_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us")


def write_latency_csv(path: Path, latency: dict) -> None:
    """The swarm's µs percentiles per step (whole authentication, signing, each request, the hub's own
    timings) as a CSV beside Locust's, which counts HTTP requests only."""
    import csv

    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(("name", *LATENCY_COLUMNS))
        for name, h in latency.items():
            out.writerow((name, *(h.get(c, "") for c in LATENCY_COLUMNS)))


def write_worker(directory: Path, index: int, report: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"worker-{index}.json"
    path.write_text(json.dumps(report, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = [
    "CPU_LIMIT",
    "LATENCY_COLUMNS",
    "merge_reports",
    "spread",
    "write_latency_csv",
    "write_results",
    "write_worker",
]
