"""``certstorm run``: the main job. Starts the hub, makes a fleet, drives Locust headless through a
step-to-saturation shape at each hub worker count and then a reconnect storm, samples the hub's metrics
and the CPU of hub and generator once a second, and writes ``results/<run-id>/`` with the report.

Everything measured lands in ``raw/`` first (see :mod:`bench.capacity.report`); the report is built from it at the
end, and again on Ctrl-C with whatever was measured by then.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.measure import FloorProbe
from bench.capacity.report import build_report
from hubsim.service.launcher import HubProcess, cpu_seconds
from loadgen._fleet import generate_fleet

_METRIC = re.compile(r'^certstorm_authentications_total\{([^}]*)\}\s+([0-9.eE+-]+)$', re.M)


def parse_auth_metrics(text: str) -> tuple[float, float]:
    """(admitted, refused) totals from the hub's Prometheus text."""
    ok = bad = 0.0
    for labels, value in _METRIC.findall(text):
        if 'outcome="admitted"' in labels:
            ok += float(value)
        else:
            bad += float(value)
    return ok, bad


def _children(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


class Sampler(threading.Thread):
    """Once a second: hub admissions/refusals from /metrics, CPU seconds of hub and generator."""

    def __init__(self, hub: HubProcess, gen_pid: int, phase: str, workers: int, target_of, t_origin: float):
        super().__init__(daemon=True)
        self.hub, self.gen_pid, self.phase, self.workers = hub, gen_pid, phase, workers
        self.target_of, self.t_origin = target_of, t_origin
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self._seen: dict[int, float] = {}    # pid -> CPU seconds last read
        self._spent = {"hub": 0.0, "gen": 0.0}

    def _cpu(self, side: str, pids: list[int]) -> float:
        """Cumulative CPU of a side, summed from each process's own increase, so processes that exit
        or are replaced (a restarted worker) never make the total go backwards."""
        for pid in pids:
            now = cpu_seconds([pid])
            last = self._seen.get(pid, 0.0)
            if now > last:
                self._spent[side] += now - last
                self._seen[pid] = now
        return self._spent[side]

    def sample(self) -> dict | None:
        try:
            conn = http.client.HTTPConnection(self.hub.host, self.hub.port, timeout=5)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
        except (OSError, http.client.HTTPException):
            return None
        ok, bad = parse_auth_metrics(text)
        now = time.time()
        hub_pids = _children(self.hub.proc.pid) if self.hub.proc else []
        return {"t": now - self.t_origin, "wall": now, "phase": self.phase, "workers": self.workers,
                "target": self.target_of(now), "ok": ok, "errors": bad, "hub_cpu": self._cpu("hub", hub_pids),
                "gen_cpu": self._cpu("gen", _children(self.gen_pid)), "p50": 0.0, "p90": 0.0, "p99": 0.0,
                "p999": 0.0}

    def run(self):
        while not self.stop_event.is_set():
            row = self.sample()
            if row:
                self.samples.append(row)
            self.stop_event.wait(1.0)

    def stop(self):
        self.stop_event.set()
        self.join(5)
        row = self.sample()
        if row:
            self.samples.append(row)


def _locust(args: list[str], log: Path) -> subprocess.Popen:
    """The swarm as its own process, from wherever the loadgen package is installed."""
    import loadgen
    swarm = Path(loadgen.__file__).resolve().parent
    cmd = [sys.executable, "-m", "locust", "-f", str(swarm), "--headless", "--only-summary", "--csv-full-history",
           "--exit-code-on-error", "0", *args]
    out = open(log, "wb")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=swarm.parent, start_new_session=True)


def _history(csv_prefix: Path) -> list[tuple[float, dict]]:
    """Locust's per-second 'current' percentiles of the whole authentication, as (epoch, ms values)."""
    import csv
    path = Path(f"{csv_prefix}_stats_history.csv")
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("Name") != "authentication":
                continue
            try:
                out.append((float(row["Timestamp"]), {k: float(row[c] or 0) for k, c in
                            (("p50", "50%"), ("p90", "90%"), ("p99", "99%"), ("p999", "99.9%"))}))
            except (KeyError, ValueError):
                continue
    return out


def _attach_latency(samples: list[dict], history: list[tuple[float, dict]]) -> None:
    if not history:
        return
    times = [t for t, _ in history]
    import bisect
    for s in samples:
        i = bisect.bisect_right(times, s["wall"]) - 1
        if i >= 0:
            s.update(history[i][1])


def _stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Run:
    def __init__(self, args):
        self.args = args
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out) / self.run_id
        self.raw = self.dir / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.samples: list[dict] = []
        self.t_origin = time.time()
        self.active: list = []

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t_origin:6.1f}s] {text}", flush=True)

    def config(self) -> dict:
        a = self.args
        cores = os.cpu_count() or 1
        return {"devices": a.devices, "workers": a.workers, "step": {"start": a.start_rate, "add": a.step_rate,
                "seconds": a.step_seconds, "steps": a.steps}, "storm": {"devices": a.storm_devices,
                "backoff": a.backoff, "quota": a.storm_quota}, "slo_p99_ms": a.slo_ms,
                "hub_cores": {str(w): float(min(w, cores)) for w in a.workers},
                "projection": {"devices": a.plan_devices, "window_s": a.plan_window}, "machine_cores": cores,
                "transport": a.transport}

    def save(self) -> None:
        (self.raw / "config.json").write_text(json.dumps(self.config(), indent=1))
        (self.raw / "timeline.json").write_text(json.dumps(self.samples))

    # -- phases ---------------------------------------------------------------------------------------
    def floor(self) -> None:
        probe = FloorProbe()
        verify = min(probe.run(500) / 500 for _ in range(5)) / 2
        (self.raw / "floor.json").write_text(json.dumps({"verify_us": verify * 1e6}))
        self.say(f"crypto floor: one raw P-256 verify = {verify * 1e6:.0f} µs")

    def fleet(self):
        self.say(f"making a fleet of {self.args.devices:,} devices (supply chain Company-X → Factory-Y → Technician-Z)")
        return generate_fleet(self.dir / "fleet", self.args.devices, progress=sys.stderr.isatty())

    def _hub(self, workers: int, name: str, extra=()) -> HubProcess:
        if self.args.transport == "mqtts":
            extra = (*extra, "--mqtts-port", "0")
        hub = HubProcess(self.dir / f"hub-{name}.db", workers=workers, args=tuple(extra)).start()
        self.active.append(hub)
        return hub

    def _target(self, hub: HubProcess) -> list[str]:
        """The swarm's options that point it at the hub, over the transport under test."""
        if self.args.transport == "mqtts":
            return ["--host", hub.mqtts_url, "--hub-url", hub.url, "--tls-ca", hub.tls_ca]
        return ["--host", hub.url]

    def step_phase(self, workers: int) -> None:
        a = self.args
        hub = self._hub(workers, f"step-w{workers}")
        self.say(f"hub with {workers} worker(s) at {hub.url}; step shape {a.start_rate:g}/s + {a.step_rate:g}/s "
                 f"every {a.step_seconds:g} s, {a.steps} steps")
        prefix = self.raw / f"step-w{workers}"
        started = {"t": None}

        def target(now: float) -> float:
            if started["t"] is None:
                return 0.0
            k = min(int((now - started["t"]) // a.step_seconds), a.steps - 1)
            return a.start_rate + k * a.step_rate

        proc = _locust([*self._target(hub), "--fleet", str(self.dir / "fleet"), "--shape", "step",
                        "--rate", str(a.start_rate), "--step-rate", str(a.step_rate),
                        "--step-seconds", str(a.step_seconds), "--steps", str(a.steps),
                        "--results-dir", str(prefix) + "-swarm", "--csv", str(prefix)], prefix.with_suffix(".log"))
        self.active.append(proc)
        sampler = Sampler(hub, proc.pid, "step", workers, target, self.t_origin)
        sampler.start()
        try:
            deadline = time.time() + a.steps * a.step_seconds + 90
            while proc.poll() is None and time.time() < deadline:
                if started["t"] is None and sampler.samples and sampler.samples[-1]["ok"] > 0:
                    started["t"] = sampler.samples[-1]["wall"] - 1.0
                time.sleep(0.2)
        finally:
            sampler.stop()
            _stop(proc)
            rows = [s for s in sampler.samples if started["t"] is not None and s["wall"] >= started["t"]]
            for s in rows:
                s["target"] = target(s["wall"] - 0.001)
            _attach_latency(rows, _history(prefix))
            self.samples.extend(rows)
            hub.stop()
            self.save()
        last = rows[-1] if rows else None
        if last:
            self.say(f"  admitted {last['ok']:,.0f}, refused {last['errors']:,.0f}")

    def storm_phase(self, workers: int) -> None:
        a = self.args
        extra = ("--quota", str(a.storm_quota)) if a.storm_quota else ()
        hub = self._hub(workers, "storm", extra)
        self.say(f"reconnect storm: {a.storm_devices:,} devices at once, backoff {a.backoff}, "
                 f"hub quota {a.storm_quota or 'none'}/s")
        swarm_dir = self.raw / "storm-swarm"
        proc = _locust([*self._target(hub), "--fleet", str(self.dir / "fleet"), "--shape", "storm",
                        "--storm-devices", str(a.storm_devices), "--backoff", a.backoff,
                        "--results-dir", str(swarm_dir), "--csv", str(self.raw / "storm")],
                       self.raw / "storm.log")
        self.active.append(proc)
        try:
            proc.wait(a.storm_timeout)
        except subprocess.TimeoutExpired:
            self.say("  the storm did not finish in time; stopping it")
        finally:
            _stop(proc)
            hub.stop()
        summary = _newest_summary(swarm_dir)
        curve = (summary or {}).get("admission_curve")
        if curve:
            step = curve.get("bucket_s", 0.1)
            pts = [[round((i + 1) * step, 3), c] for i, c in enumerate(curve["admitted_cumulative"])]
            attempts = sorted(curve.get("attempts", []))
            # The swarm's connection slots cap its attempts per second; the simulation must know that cap
            # (real devices have none). The 95th percentile of busy buckets is its sustained rate.
            busy = [x for x in attempts if x > 0]
            attempt_rate = busy[int(0.95 * (len(busy) - 1))] / step if busy else None
            (self.raw / "storm.json").write_text(json.dumps({
                "devices": curve.get("devices", a.storm_devices), "capacity": a.storm_quota or None,
                "backoff": a.backoff, "curve": pts, "retries": int(sum(curve.get("refused", []))),
                "attempt_rate": attempt_rate}))
            self.say(f"  all admitted after {curve.get('time_to_100pct_s')} s")
        if summary and summary.get("latency_us"):
            phases = {name: {k.replace("_us", "").replace("p99.9", "p999"): v for k, v in h.items()
                             if k.startswith("p")} for name, h in summary["latency_us"].items() if h.get("count")}
            (self.raw / "phases.json").write_text(json.dumps(phases))

    def cleanup(self) -> None:
        for item in reversed(self.active):
            if isinstance(item, HubProcess):
                try:
                    item.stop(10)
                except Exception:  # noqa: BLE001 - stopping on the way out: kill what does not stop
                    item.kill()
            else:
                _stop(item, 10)


def _newest_summary(directory: Path) -> dict | None:
    found = sorted(directory.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None


def run_command(args) -> int:
    run = Run(args)
    run.say(f"certstorm run {run.run_id} → {run.dir} (devices over {args.transport})")
    interrupted = False
    try:
        run.floor()
        run.fleet()
        for w in args.workers:
            run.step_phase(w)
        if args.storm_devices:
            run.storm_phase(max(args.workers))
    except KeyboardInterrupt:
        interrupted = True
        run.say("interrupted: stopping the hub and the swarm, writing what was measured")
    finally:
        run.cleanup()
        run.save()
    summary = build_report(run.dir)
    latest = Path(args.out) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    latest.symlink_to(run.run_id)
    shutil.rmtree(run.dir / "fleet", ignore_errors=True)  # identities are re-creatable; keep results small
    print()
    print(summary["first_line"])
    print(f"hub CPU per authentication: {summary['hub_us_per_auth'] or 0:.0f} µs = "
          f"{summary['floor_multiple'] or 0:.2f}× the crypto floor")
    print(f"report: {run.dir / 'report.html'}  (results/latest)")
    return 130 if interrupted else 0


def add_run_arguments(p) -> None:
    p.add_argument("--devices", type=int, default=20000, help="fleet size (default 20000)")
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3],
                   help="hub worker counts to measure, comma-separated (default 1,2,3: three counts allow a USL fit)")
    p.add_argument("--start-rate", type=float, default=150.0, help="first step's authentications/s")
    p.add_argument("--step-rate", type=float, default=150.0, help="added per step")
    p.add_argument("--step-seconds", type=float, default=8.0, help="length of a step")
    p.add_argument("--steps", type=int, default=6, help="number of steps")
    p.add_argument("--storm-devices", type=int, default=3000, help="devices in the reconnect storm (0: none)")
    p.add_argument("--storm-quota", type=float, default=300.0,
                   help="hub admission quota during the storm, per second (0: unlimited)")
    p.add_argument("--storm-timeout", type=float, default=90.0, help="seconds before a storm is cut short")
    p.add_argument("--backoff", default="azure-c", help="reconnect backoff preset for the storm")
    p.add_argument("--slo-ms", type=float, default=500.0, help="p99 latency objective for the knee (ms)")
    p.add_argument("--plan-devices", type=int, default=2_000_000, help="projection: devices to admit")
    p.add_argument("--plan-window", type=float, default=600.0, help="projection: within this many seconds")
    p.add_argument("--out", default="results", help="where run folders go (default results/)")
    p.add_argument("--transport", choices=("http", "mqtts"), default="http",
                   help="how devices reach the hub: the HTTP two-step exchange (default) or MQTT over mutual "
                        "TLS (the hub's --mqtts-port listener, cached validation, no session resumption)")
