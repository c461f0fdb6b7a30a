"""The end of a swarm run: each process drains and builds its report; the master (or a single process)
collects the reports and writes the run's summary (:mod:`loadgen._report`)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path

import gevent
from locust.stats import RequestStats, StatsEntry

from devicekit.hubclient import HubClient
from loadgen._report import merge_reports, write_results, write_worker
from loadgen._state import MSG_FINISH, Stage, Swarm

__all__ = ["finish_local", "finish_run", "iso", "keep_sent_stats"]

log = logging.getLogger("certstorm.swarm")


def finish_local(sw: Swarm) -> dict | None:
    """Stop starting new authentications, let the ones in flight end, and build this process's report
    (once per run)."""
    if sw.recorder is None or sw.stage >= Stage.REPORTED:
        return None
    sw.stage = Stage.DRAINING
    deadline = time.monotonic() + 5.0
    while sw.in_flight > 0 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    sw.recorder.cpu.stop()
    extra = {
        "role": sw.role,
        "index": sw.partition.index,
        "devices_in_share": sw.partition.size,
        "pid": os.getpid(),
        "in_flight_at_end": sw.in_flight,
        "locust": _locust_stats(sw.env.runner.stats, sw.sent_stats),
    }
    if sw.queue is not None:
        extra["queue"] = {
            "devices": sw.queue.total,
            "admitted": sw.queue.admitted,
            "gave_up": sw.queue.gave_up,
            "still_waiting": len(sw.queue),
        }
    report = sw.recorder.to_dict(extra)
    sw.stage = Stage.REPORTED
    try:
        write_worker(_results_path(sw), sw.partition.index, report)
    except OSError as exc:
        log.warning("could not write this worker's report: %s", exc)
    return report


def finish_run(sw: Swarm, wait: float | None = None) -> None:
    """Master or local: collect every report and write the summary (once per run)."""
    if sw.stage == Stage.FINISHED or sw.plan is None:
        return
    if sw.role == "local":
        report = finish_local(sw)
        if report is not None:
            sw.reports[0] = report
    else:
        sw.runner.send_message(MSG_FINISH, {"run_id": sw.plan["run_id"]})
        deadline = time.monotonic() + (sw.options.finish_timeout if wait is None else wait)
        while time.monotonic() < deadline and not sw.expected_workers <= set(sw.reports):
            gevent.sleep(0.1)
    sw.stage = Stage.FINISHED
    _write_summary(sw)


def _results_path(sw: Swarm) -> Path:
    return Path(sw.plan["results_dir"]) / sw.plan["run_id"]


def _write_summary(sw: Swarm) -> None:
    meta = dict(sw.meta)
    meta["run"] = dict(meta.get("run", {}), ended_at=iso(time.time()), duration_s=round(time.time() - sw.plan["t0"], 3))
    missing = sorted(sw.expected_workers - set(sw.reports)) if sw.role == "master" else []
    meta["reports"] = {"received": sorted(sw.reports), "missing": missing, "complete": not missing}
    try:
        meta["hub_memory_after"] = HubClient(sw.hub_url).memory() if sw.hub_url else None
    except Exception:
        meta["hub_memory_after"] = None
    meta["hub_cpu"] = _hub_cpu(meta.get("hub_memory_before"), meta.get("hub_memory_after"))
    # Locust's own entries, summed over the processes (a master's stats lag its workers' by up to 3 s)
    meta["locust"] = _sum_locust(r.get("locust", {}) for r in sw.reports.values())
    if not sw.reports:
        log.error("no worker reports arrived; no summary written")
        return
    summary, hists = merge_reports(sw.reports, meta)
    path = write_results(_results_path(sw), summary, hists)
    a = summary["authentications"]
    log.info(
        "swarm summary: %d admitted, %d failed attempts, %d distinct devices, %s -> %s",
        a["admitted"],
        a["failed_attempts"],
        summary["devices"]["distinct_admitted"],
        summary["generator_verdict"],
        path,
    )
    log.info(
        "swarm latency, µs (the swarm's own histograms; Locust counts HTTP requests only):\n%s",
        _latency_table(summary["latency_us"]),
    )
    if summary["generator_limited"]:
        log.warning(summary["generator_verdict"])


def _latency_table(latency: dict) -> str:
    rows = [f"{'':<20}{'count':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}"]
    for name, h in latency.items():
        if h.get("count"):
            rows.append(
                f"{name:<20}{h['count']:>10}" + "".join(f"{h[f'p{q}_us']:>10,.0f}" for q in ("50", "90", "99", "99.9"))
            )
    return "\n".join(rows)


def iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat(timespec="milliseconds")


def keep_sent_stats(environment) -> RequestStats:
    """A worker's Locust stats as it sends them to the master: Locust empties its entries after each report
    (every 3 s), so what this process counted in all is what it sent plus what it holds."""
    sent = RequestStats()

    def on_report_to_master(client_id, data, **_kw):
        for serialized in data.get("stats", ()):
            entry = StatsEntry.unserialize(serialized, sent)
            key = (entry.name, entry.method)
            if key not in sent.entries:
                sent.entries[key] = StatsEntry(sent, entry.name, entry.method)
            sent.entries[key].extend(entry)

    environment.events.report_to_master.add_listener(on_report_to_master)
    return sent


def _locust_stats(stats: RequestStats, sent: RequestStats | None = None) -> dict:
    entries = {key: StatsEntry(stats, *key) for key in [*stats.entries, *(sent.entries if sent else ())]}
    for key, entry in entries.items():
        for part in (stats.entries.get(key), sent.entries.get(key) if sent else None):
            if part is not None:
                entry.extend(part)
    out = {}
    for (name, method), e in entries.items():
        out[f"{method} {name}"] = {
            "requests": e.num_requests,
            "failures": e.num_failures,
            "avg_ms": round(e.avg_response_time, 3),
            "p50_ms": e.get_response_time_percentile(0.5),
            "p99_ms": e.get_response_time_percentile(0.99),
        }
    return out


def _hub_cpu(before: dict | None, after: dict | None) -> dict | None:
    """The hub workers' CPU use during the run (same-machine hubs only): is the hub the bottleneck?"""
    if not before or not after:
        return None
    wall = after["at"] - before["at"]
    per = {
        pid: round((after["worker_cpu_s"][pid] - cpu) / wall, 4)
        for pid, cpu in before["worker_cpu_s"].items()
        if pid in after["worker_cpu_s"]
    }
    busiest = max(per.values(), default=0.0)
    return {
        "wall_s": round(wall, 3),
        "utilization_by_worker": per,
        "busiest": busiest,
        "saturated": busiest >= 0.85,
        "note": "includes CA registration and the ramp-up; compare with generator_cpu",
    }


def _sum_locust(per_process) -> dict:
    out: dict[str, dict] = {}
    for stats in per_process:
        for name, e in stats.items():
            acc = out.setdefault(name, {"requests": 0, "failures": 0, "max_p99_ms": 0})
            acc["requests"] += e["requests"]
            acc["failures"] += e["failures"]
            acc["max_p99_ms"] = max(acc["max_p99_ms"], e["p99_ms"] or 0)
    return out
