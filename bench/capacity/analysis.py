"""From the samples a run recorded to the answers the report gives: steps, the saturation knee, which side
saturated, hub CPU per authentication, the USL fit and the sizing projections.

Everything here is a pure function of plain data, so the report can be rebuilt from a run's raw files at any
time (``certstorm report``) and tested without a run.

A *sample* is one row of the run's timeline, every field cumulative except the latency percentiles::

    {"t": seconds since start, "phase": "step"|"storm", "workers": hub workers, "target": intended auth/s,
     "ok": authentications admitted so far, "errors": refused or failed so far,
     "hub_cpu": hub CPU seconds so far, "gen_cpu": generator CPU seconds so far,
     "p50": ms, "p90": ms, "p99": ms, "p999": ms}   # Locust's current percentiles (last ~10 s window)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


from bench.capacity.planner import USL, fit_usl

CPU_LIMIT = 0.85      # a process busier than this is saturated (the CONNBURST rule)
ERROR_LIMIT = 0.001   # at most 0.1% failed authentications at the knee

# Cloud reference points (new device connections per second); see the README.
AZURE_TIERS = {  # name: (per-unit rate, minimum rate for the first unit, max units)
    "S1": (12.0, 100.0, 200),
    "S2": (120.0, 120.0, 200),
    "S3": (6000.0, 6000.0, 10),
}
AWS_CONNECT_DEFAULT = 500.0      # connect requests per second per account, default
AWS_CONNECT_RAISED = 3000.0      # commonly granted after a quota increase


@dataclass
class Step:
    workers: int
    target: float         # intended authentications/s
    start: float
    end: float
    achieved: float       # admitted/s
    error_rate: float     # failed / attempted
    hub_cpu: float        # fraction of the hub's cores busy
    gen_cpu: float        # fraction of one generator core busy (max over processes is in the samples)
    hub_us_per_auth: float | None
    p50: float
    p90: float
    p99: float
    p999: float

    def within(self, slo_p99_ms: float) -> bool:
        return (self.p99 <= slo_p99_ms and self.error_rate <= ERROR_LIMIT and self.hub_cpu <= CPU_LIMIT
                and self.achieved > 0)


def steps_from_samples(samples: list[dict], hub_cores: dict[int, float], gen_cores: float = 1.0) -> list[Step]:
    """Cut the step phase of the timeline into constant-target stretches and measure each."""
    rows = [s for s in samples if s.get("phase") == "step"]
    out: list[Step] = []
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1]["target"] == rows[i]["target"] and \
                rows[j + 1]["workers"] == rows[i]["workers"]:
            j += 1
        first, last = rows[i], rows[j]
        # Skip the ramp into the step: measure from its second sample when there is one.
        head = rows[i + 1] if j > i + 1 else first
        dt = last["t"] - head["t"]
        if dt > 0:
            ok = last["ok"] - head["ok"]
            err = last["errors"] - head["errors"]
            hub = last["hub_cpu"] - head["hub_cpu"]
            gen = last["gen_cpu"] - head["gen_cpu"]
            tail = rows[max(i, (i + j) // 2): j + 1]  # latency: the later half, after the window refills
            cores = hub_cores.get(first["workers"], float(first["workers"]))
            out.append(Step(
                workers=first["workers"], target=first["target"], start=head["t"], end=last["t"],
                achieved=ok / dt, error_rate=err / (ok + err) if ok + err else 0.0,
                hub_cpu=hub / dt / cores, gen_cpu=gen / dt / gen_cores,
                hub_us_per_auth=hub / ok * 1e6 if ok else None,
                p50=max(r["p50"] for r in tail), p90=max(r["p90"] for r in tail),
                p99=max(r["p99"] for r in tail), p999=max(r["p999"] for r in tail),
            ))
        i = j + 1
    return out


def knee(steps: list[Step], slo_p99_ms: float, workers: int | None = None) -> Step | None:
    """The step with the highest achieved rate that meets the SLO, errors <= 0.1% and hub CPU <= 85%."""
    good = [s for s in steps if s.within(slo_p99_ms) and (workers is None or s.workers == workers)]
    return max(good, key=lambda s: s.achieved) if good else None


def limiting_side(steps: list[Step]) -> str:
    """'generator' when a generator was saturated before the hub was, else 'hub'."""
    for s in sorted(steps, key=lambda s: s.start):
        if s.gen_cpu >= CPU_LIMIT and s.hub_cpu < CPU_LIMIT:
            return "generator"
        if s.hub_cpu >= CPU_LIMIT:
            return "hub"
    # Neither side busy, yet the intended rate was not delivered: the generator's pacing (too few
    # connection slots for the latency, or its scheduler) fell short while the hub had headroom.
    if any(s.achieved < 0.95 * s.target for s in steps):
        return "generator"
    return "neither"


def capacity_by_workers(steps: list[Step], slo_p99_ms: float) -> dict[int, float]:
    """Sustainable admission rate per hub worker count: the knee, or the best rate if no step met the SLO."""
    out = {}
    for w in sorted({s.workers for s in steps}):
        k = knee(steps, slo_p99_ms, w)
        out[w] = k.achieved if k else max(s.achieved for s in steps if s.workers == w)
    return out


@dataclass
class Scaling:
    points: dict[int, float]
    usl: USL | None
    note: str
    predicted_from_fewer: dict | None   # {"workers", "predicted", "measured", "error"}


def scaling(points: dict[int, float]) -> Scaling:
    """USL fit when three or more worker counts were measured; a linear prediction from fewer otherwise,
    checked against the largest count measured."""
    counts = sorted(points)
    usl, note = None, ""
    if len(counts) >= 3 and 1 in points:
        try:
            usl = fit_usl(counts, [points[c] for c in counts])
            note = f"USL fit over {len(counts)} worker counts"
        except ValueError as exc:
            note = f"no USL fit: {exc}"
    else:
        note = (f"no USL fit: {len(counts)} worker count(s) measured (it needs 1 and two more); "
                "projections assume linear scaling per core")
    check = None
    if len(counts) >= 2:
        fewer = [c for c in counts if c < counts[-1]]
        if usl is not None and len(fewer) >= 3 and 1 in fewer:
            model = fit_usl(fewer, [points[c] for c in fewer])
            predicted = float(model.throughput(counts[-1]))
        else:
            base = fewer[-1]
            predicted = points[base] / base * counts[-1]
        measured = points[counts[-1]]
        check = {"workers": counts[-1], "predicted": predicted, "measured": measured,
                 "error": predicted / measured - 1 if measured else None}
    return Scaling(points, usl, note, check)


def cores_needed(rate: float, per_core: float, usl: USL | None) -> int | None:
    if rate <= 0:
        return 0
    if usl is not None:
        return usl.workers_for(rate)
    return math.ceil(rate / per_core) if per_core > 0 else None


def cloud_references(rate: float) -> list[dict]:
    """How the same admission rate maps onto managed services' published connection throttles."""
    out = []
    for tier, (per_unit, first, max_units) in AZURE_TIERS.items():
        units = 1 if rate <= first else math.ceil(rate / per_unit)
        out.append({"service": f"Azure IoT Hub {tier}", "units": units,
                    "possible": units <= max_units, "note": f"{per_unit:g}/s per unit, at most {max_units} units"})
    for label, cap in (("AWS IoT Core (default quota)", AWS_CONNECT_DEFAULT),
                       ("AWS IoT Core (raised quota)", AWS_CONNECT_RAISED)):
        out.append({"service": label, "units": None, "possible": rate <= cap,
                    "note": f"{cap:g} connects/s per account"})
    return out


def summarise_steps(steps: list[Step]) -> list[dict]:
    return [asdict(s) for s in steps]
