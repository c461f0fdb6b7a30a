"""Steps cut from what a run measured second by second: each step is the whole seconds during which one
rate of the schedule was in force, and nothing else.

Rates change on whole seconds (the runner schedules them so), so a step's window is ``[at, next at)``:
no start-up, no change of rate, nothing after the stop. Its figures come from the swarm's per-second
records (admissions, failures, the generator workers' CPU, the latencies of the admissions that ended in
it) and from the target's CPU, read about once a second and interpolated to the window's edges by the time
each reading was taken. A worker that reported none of a
window's seconds is named in the step and the step is judged on the others.

A *step*::

    {"segment", "workers", "stage": "ramp"|"refine"|"ceiling", "phase", "target": intended/s (None: closed
     model), "start", "end" (seconds since the run began), "seconds", "achieved", "intended", "error_rate",
     "target_cpu", "target_cores_busy", "target_us_per_auth", "gen_cpu", "gen_cpu_by_worker",
     "gen_cores_busy", "gen_us_per_auth", "machine_cpu", "reconnect_share", "count", "p50", "p90", "p99", "p999",
     "workers_missing"}

CPU figures are fractions (of the target's cores or its busiest thread, whichever is higher; of one core
for each generator worker); latencies are in ms.
"""

from __future__ import annotations

import bisect
import itertools

from loadgen import from_sparse

__all__ = ["STAGES", "cut_steps", "series", "window"]

STAGES = ("ramp", "refine", "ceiling")


def window(schedule: list[dict], index: int) -> tuple[int, int] | None:
    """The whole seconds ``[first, end)`` during which entry ``index`` was in force, or None."""
    entry = schedule[index]
    if entry.get("stop") or index + 1 >= len(schedule):
        return None
    first, end = int(-(-entry["at"] // 1)), int(schedule[index + 1]["at"] // 1)
    return (first, end) if end > first else None


class _Samples:
    """The target's and the machine's cumulative readings, taken about once a second at the times they were
    actually read: a value at any instant is interpolated between the readings around it (a reading a
    busy sampler took late does not shift a window)."""

    GAP = 3.0  # seconds: readings further apart than this do not bracket an instant

    def __init__(self, samples: list[dict]):
        # run folders written before readings carried their read time name the whole second instead
        samples = [s if "t" in s else {**s, "t": s["second"]} for s in samples]
        self.rows = sorted(samples, key=lambda s: s["t"])
        self.times = [s["t"] for s in self.rows]

    def at(self, key: str, when: float) -> float | None:
        i = bisect.bisect_left(self.times, when)
        after = next((r for r in self.rows[i:] if r.get(key) is not None), None)
        before = next((r for r in reversed(self.rows[:i]) if r.get(key) is not None), None)
        if after is not None and after["t"] == when:
            return after[key]
        if before is None or after is None or after["t"] - before["t"] > self.GAP:
            return None
        share = (when - before["t"]) / (after["t"] - before["t"])
        return before[key] + share * (after[key] - before[key])

    def busiest(self, first: float, end: float) -> float | None:
        """The busiest thread's share of its time over the readings within ``[first, end]``."""
        rows = [r for r in self.rows if r.get("busiest_s") is not None]
        busy = spent = 0.0
        for before, after in itertools.pairwise(rows):
            if before["t"] >= first - 0.5 and after["t"] <= end + 0.5:
                busy += after["busiest_s"]
                spent += after["t"] - before["t"]
        return busy / spent if spent > 0 else None

    def grew(self, key: str, first: float, end: float) -> float | None:
        a, b = self.at(key, first), self.at(key, end)
        return None if a is None or b is None else b - a


def _target(samples: _Samples, first: int, end: int, cores: float | None) -> tuple:
    """(fraction busy, cores busy, CPU seconds) of the target over ``[first, end)``, None where unknown."""
    cpu = samples.grew("cpu_s", first, end)
    if cpu is None or not cores:
        return None, None, None
    seconds = end - first
    busiest = samples.busiest(first, end) or 0.0
    return max(cpu / seconds / cores, busiest), cpu / seconds, cpu


def _machine(samples: _Samples, first: int, end: int, machine_cores: int) -> float | None:
    busy = samples.grew("machine_s", first, end)
    return None if busy is None else busy / (end - first) / machine_cores


def _reconnect_share(samples: _Samples, first: int, end: int) -> float | None:
    ok, again = samples.grew("hub_ok", first, end), samples.grew("hub_reconnects", first, end)
    if ok is None or again is None or ok <= 0:
        return None
    return min(1.0, max(0.0, again / ok))


def cut_steps(
    schedule: list[dict],
    seconds: list[dict],
    samples: list[dict],
    *,
    segment: str,
    workers: int | None,
    target_cores: float | None,
    machine_cores: int,
    origin: float,
    expected: set[int] | None = None,
) -> list[dict]:
    """One step per scheduled rate whose window has at least one whole second of records."""
    by_second = {row["second"]: {int(w): r for w, r in row["workers"].items()} for row in seconds}
    by_sample = _Samples(samples)
    everyone = set(expected or ()) | {w for row in by_second.values() for w in row}
    out = []
    for i, entry in enumerate(schedule):
        if entry.get("stage") not in STAGES:
            continue
        span = window(schedule, i)
        if span is None:
            continue
        first, end = span
        rows = [by_second.get(s, {}) for s in range(first, end)]
        reporting = {w for row in rows for w in row}
        if not reporting:
            continue
        n = end - first
        records = [r for row in rows for r in row.values()]
        admitted = sum(r["admitted"] for r in records)
        failed = sum(r["failed"] for r in records)
        intended = sum(r["intended"] for r in records)
        gen = {str(w): sum(row[w]["cpu_s"] for row in rows if w in row) / n for w in sorted(reporting)}
        gen_cpu_s = sum(r["cpu_s"] for r in records)
        hist = from_sparse(r["lat"] for r in records if r.get("lat"))
        busy, cores_busy, target_cpu_s = _target(by_sample, first, end, target_cores)

        def ms(q, hist=hist):
            value = hist.percentile(q)
            return None if value is None else value / 1000.0

        out.append(
            {
                "segment": segment,
                "workers": workers,
                "stage": entry["stage"],
                "phase": entry.get("phase"),
                "target": None if entry["rate"] is None else float(entry["rate"]),
                "start": first - origin,
                "end": end - origin,
                "seconds": n,
                "achieved": admitted / n,
                "intended": intended / n,
                "error_rate": failed / (admitted + failed) if admitted + failed else 0.0,
                "target_cpu": busy,
                "target_cores_busy": cores_busy,
                "target_us_per_auth": target_cpu_s / admitted * 1e6 if target_cpu_s is not None and admitted else None,
                "gen_cpu": max(gen.values(), default=0.0),
                "gen_cpu_by_worker": gen,
                "gen_cores_busy": gen_cpu_s / n,
                "gen_us_per_auth": gen_cpu_s / admitted * 1e6 if admitted else None,
                "machine_cpu": _machine(by_sample, first, end, machine_cores),
                "reconnect_share": _reconnect_share(by_sample, first, end),
                "count": hist.count,
                "p50": ms(50),
                "p90": ms(90),
                "p99": ms(99),
                "p999": ms(99.9),
                "workers_missing": sorted(everyone - reporting),
            }
        )
    return out


def series(seconds: list[dict], samples: list[dict], *, origin: float, target_cores: float | None) -> list[dict]:
    """Second by second, for the plots: ``{"t", "admitted", "failed", "target_cpu", "gen": {worker: CPU}}``
    (CPU as fractions; the target's None where unknown)."""
    by_sample = _Samples(samples)
    out = []
    for row in seconds:
        second, records = row["second"], row["workers"]
        busy, _, _ = _target(by_sample, second, second + 1, target_cores)
        out.append(
            {
                "t": second - origin,
                "admitted": sum(r["admitted"] for r in records.values()),
                "failed": sum(r["failed"] for r in records.values()),
                "target_cpu": busy,
                "gen": {str(w): r["cpu_s"] for w, r in records.items()},
            }
        )
    return out
