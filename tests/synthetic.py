"""A run without processes: a target and generators modelled second by second, driven by the real knee
search, cut into steps by the real windows and written as a run folder the real report reads.

The model: the target admits up to ``capacity`` per second and spends ``fixed`` cores plus ``target_us``
per admission (so its CPU saturates at the capacity); each generator process spends ``gen_fixed`` plus
``gen_us`` per admission of its share; latency grows as the target fills. Poisson noise is optional.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from certstorm.capacity.search import Search, SearchSettings
from certstorm.capacity.windows import cut_steps
from loadgen import sparse_counts


@dataclass
class Model:
    capacity: float = 2000.0
    target_us: float = 400.0
    fixed: float = 0.05
    gen_us: float = 250.0
    gen_fixed: float = 0.02
    generators: int = 1
    target_cores: float | None = 1.0  # None: the target's CPU is not measured
    gen_capacity: float = float("inf")  # admissions/s the generators can make together
    refuse: bool = False
    noise: bool = False
    lose: dict = field(default_factory=dict)  # worker -> second (relative to begin) it stops reporting
    fleet: int | None = None  # devices: once each was admitted, admissions are reconnects (None: never)
    seed: int = 7

    def admitted(self, rate: float | None, rng: random.Random) -> float:
        top = min(self.capacity, self.gen_capacity)
        value = top if rate is None else min(rate, top)
        return max(0.0, rng.gauss(value, value**0.5)) if self.noise else value

    def latency_us(self, load: float, n: int, rng: np.random.Generator) -> np.ndarray:
        base = 500.0 / max(0.02, 1.0 - min(load, 0.98))
        return rng.exponential(base, n)


def simulate(model: Model, settings: SearchSettings, *, segment="w1", workers=1, begin=1_000_000, origin=None):
    """The search run against the model: (schedule, seconds, samples, steps)."""
    rng = random.Random(model.seed)
    latencies = np.random.default_rng(model.seed)
    origin = begin - 5 if origin is None else origin
    search = Search(settings, begin)
    seconds, samples = [], []
    cpu = ok = 0.0
    samples.append({"t": begin, "cpu_s": cpu, "busiest_s": 0.0, "machine_s": 0.0, "hub_ok": 0.0, "hub_reconnects": 0.0})
    second = begin
    seg = {"name": segment, "workers": workers, "target_cores": model.target_cores, "machine_cores": 2}
    while not search.stopped:
        entry = search.current
        end = search.ends_at
        while second < end:
            in_force = [e for e in search.entries if e["at"] <= second][-1]  # a settle before the entry idles
            admitted = model.admitted(in_force["rate"], rng)
            failed = admitted if model.refuse else 0.0
            if model.refuse:
                admitted = 0.0
            load = admitted / model.capacity
            busy = model.fixed + admitted * model.target_us * 1e-6
            cpu += busy
            ok += admitted
            row = {}
            for w in range(model.generators):
                if w in model.lose and second - begin >= model.lose[w]:
                    continue
                share = admitted / model.generators
                n = round(share)
                row[str(w)] = {
                    "kind": "second",
                    "worker": w,
                    "second": second,
                    "intended": n,
                    "admitted": n,
                    "failed": round(failed / model.generators),
                    "retries": 0,
                    "cpu_s": model.gen_fixed + share * model.gen_us * 1e-6,
                    "lat": sparse_counts(model.latency_us(load, n, latencies)) if n else None,
                }
            seconds.append({"second": second, "workers": row})
            second += 1
            samples.append(
                {
                    "t": second,
                    "cpu_s": cpu if model.target_cores else None,
                    "busiest_s": busy if model.target_cores else 0.0,
                    "machine_s": second - begin,
                    "hub_ok": ok,
                    "hub_reconnects": max(0.0, ok - model.fleet) if model.fleet else 0.0,
                }
            )
        judged = cut_steps(
            [entry, {"at": end, "stop": True}],
            seconds,
            samples,
            segment=segment,
            workers=workers,
            target_cores=model.target_cores,
            machine_cores=2,
            origin=origin,
        )
        search.next(judged[0] if judged else None)
    steps = cut_steps(
        search.entries,
        seconds,
        samples,
        segment=segment,
        workers=workers,
        target_cores=model.target_cores,
        machine_cores=2,
        origin=origin,
        expected=set(range(model.generators)),
    )
    return search, seconds, samples, steps, seg


def write_run(
    path: Path,
    model: Model,
    settings: SearchSettings | None = None,
    *,
    storm: bool = True,
    target_url: str | None = None,
    workers=(1,),
) -> Path:
    """A run folder as ``certstorm run`` writes it, from the model."""
    settings = settings or SearchSettings(slo_ms=100.0)
    raw = path / "raw"
    raw.mkdir(parents=True)
    all_steps, segments = [], []
    origin = 1_000_000 - 5
    for i, w in enumerate(workers):
        name = f"w{w}" if target_url is None else "target"
        scaled = Model(**{**model.__dict__, "capacity": model.capacity * w, "lose": dict(model.lose)})
        search, seconds, samples, steps, seg = simulate(
            scaled, settings, segment=name, workers=None if target_url else w, begin=1_000_000 + 200 * i, origin=origin
        )
        for kind, data in (("schedule", search.entries), ("seconds", seconds), ("samples", samples)):
            (raw / f"{name}-{kind}.json").write_text(json.dumps(data))
        all_steps += steps
        stop = search.entries[-1]["at"]
        segments.append(
            {
                **seg,
                "bound_s": settings.bound_s,
                "seconds": stop - search.begin_at,
                "in_windows_s": sum(s["seconds"] for s in steps),
                "settle_s": sum(e["seconds"] for e in search.entries if e.get("stage") == "settle"),
                "startup_s": 3.0,
                "stopped": search.why_stopped,
                "generators": {
                    str(g): {"host": "gen-host", "pid": 100 + g, "missing_at": None} for g in range(model.generators)
                },
                "workers_lost": {str(g): float(t + 5) for g, t in model.lose.items()},
            }
        )
    (raw / "steps.json").write_text(json.dumps(all_steps))
    (raw / "segments.json").write_text(json.dumps(segments))
    (raw / "errors.json").write_text(json.dumps({"w1, knee search": {"proof:timeout": 3}}))
    target = (
        {
            "url": None,
            "kind": "hub",
            "name": "the certstorm hub this run started",
            "cpu": "its worker processes",
            "cost_known": True,
        }
        if target_url is None
        else {
            "url": target_url,
            "kind": "target",
            "name": target_url,
            "cpu": "process 42 (mosquitto) and its children" if model.target_cores else None,
            "cost_known": model.target_cores is not None,
            "cores": model.target_cores,
        }
    )
    (raw / "config.json").write_text(
        json.dumps(
            {
                "slo_p99_ms": settings.slo_ms,
                "hub_cores": {str(w): float(w) for w in workers} if target_url is None else {},
                "machine_cores": 2,
                "shared_cores": False,
                "origin": origin,
                "target": target,
                "generator": {
                    "local_processes": model.generators,
                    "remote_workers": 0,
                    "cores": model.generators,
                    "port": 5557,
                },
                "generator_cores": model.generators,
                "search": {"ceiling_s": settings.ceiling_s},
                "command": ["certstorm", "run", "--devices", "1000"],
                "projection": {"devices": 2_000_000, "window_s": 600},
                "transport": "http",
            }
        )
    )
    (raw / "floor.json").write_text(json.dumps({"verify_us": 80.0}))
    if storm:
        # 3,000 devices against 1,000 admissions/s; the curve stops at 2,900: one device short
        curve = [[t / 10, min(2900, 100 * t)] for t in range(1, 41)]
        (raw / "storm.json").write_text(
            json.dumps(
                {
                    "devices": 3000,
                    "capacity": 1000,
                    "backoff": "aws-crt",
                    "curve": curve,
                    "retries": 5000,
                    "attempt_rate": 1500,
                    "bound_s": 20,
                    "failures_by_code": {"challenge:throttled": 5000},
                }
            )
        )
    return path
