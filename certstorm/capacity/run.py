"""``certstorm run``: the main job. Starts the hub, makes a fleet, searches the saturation knee at each hub
worker count (ramp until the SLO breaks or a side saturates, then refine inside the bracket, bounded in
time), runs a reconnect storm until every device is admitted or a bound derived from the simulation, and
writes ``results/<run-id>/`` with the report.

Everything measured lands in ``raw/`` first (see :mod:`certstorm.capacity.report`); the report is built from it at the
end, and again on Ctrl-C with whatever was measured by then.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from certstorm.capacity import analysis
from certstorm.capacity.report import build_report
from certstorm.capacity.requirements import check_requirements, parse_requirement
from certstorm.capacity.sampler import GEN_CORES, Sampler
from certstorm.floor import FloorProbe
from certstorm.processes import HubProcess, newest_summary, start_swarm, stop_swarm
from devicekit.backoff import PRESETS
from devicekit.fleet import generate_fleet
from hubsim.argtypes import integer, integer_list, number


def default_workers(cores: int) -> list[int]:
    """Hub worker counts that fit beside the generator: never more than the cores left after its one core."""
    top = max(1, cores - GEN_CORES)
    return sorted({1, min(2, top), min(3, top), top})


class Run:
    def __init__(self, args):
        self.args = args
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out) / self.run_id
        self.raw = self.dir / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.cores = psutil.cpu_count() or 1
        self.workers = args.workers or default_workers(self.cores)
        self.samples: list[dict] = []
        self.steps: list[dict] = []
        self.searches: list[dict] = []
        self.errors: dict[str, dict[str, int]] = {}
        self.t_origin = time.time()
        self.active: list = []
        self.stopped_live = False  # whether the last step run was stopped because a step looked broken
        self.swarm_runs = 0
        self.next_device = 0  # each swarm run starts where the previous ones stopped: first connections

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t_origin:6.1f}s] {text}", flush=True)

    def hub_cores(self, workers: int) -> float:
        """The cores a hub of ``workers`` processes can have beside the generator's."""
        return float(max(1, min(workers, self.cores - GEN_CORES)))

    def config(self) -> dict:
        a = self.args
        return {
            "devices": a.devices,
            "workers": self.workers,
            "workers_from": "argument" if a.workers else "machine",
            "search": {
                "start": a.start_rate,
                "add": a.step_rate,
                "seconds": a.step_seconds,
                "bound_s": a.search_seconds,
            },
            "storm": {
                "devices": a.storm_devices,
                "backoff": a.backoff,
                "quota": a.storm_quota,
                "cap_s": a.storm_timeout,
            },
            "slo_p99_ms": a.slo_ms,
            "hub_cores": {str(w): self.hub_cores(w) for w in self.workers},
            "generator_cores": GEN_CORES,
            "machine_cores": self.cores,
            "shared_cores": any(w + GEN_CORES > self.cores for w in self.workers),
            "projection": {"devices": a.plan_devices, "window_s": a.plan_window},
            "requires": [r.text for r in a.require],
            "transport": a.transport,
        }

    def save(self) -> None:
        (self.raw / "config.json").write_text(json.dumps(self.config(), indent=1))
        for name, data in (
            ("timeline", self.samples),
            ("steps", self.steps),
            ("search", self.searches),
            ("errors", self.errors),
        ):
            (self.raw / f"{name}.json").write_text(json.dumps(data, indent=None))

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
        """The swarm's options that point it at the hub, over the transport under test, with the token it
        registers the fleet's CA with."""
        token = ["--admin-token-file", hub.admin_token_path]
        if self.args.transport == "mqtts":
            return ["--host", hub.mqtts_url, "--hub-url", hub.url, "--tls-ca", hub.tls_ca, *token]
        return ["--host", hub.url, *token]

    def _stepped(
        self, hub: HubProcess, workers: int, stage: str, start: float, add: float, steps: int, deadline: float
    ) -> dict | None:
        """One Locust step run against ``hub``, stopped as soon as a step breaks or at ``deadline``.
        Returns the first broken step, if any; every measured step is appended to ``self.steps``."""
        a = self.args
        self.swarm_runs += 1
        name = f"w{workers}-{stage}-{self.swarm_runs}"  # each swarm run keeps its own CSVs and log
        prefix = self.raw / name
        proc = start_swarm(
            [
                *self._target(hub),
                "--fleet",
                str(self.dir / "fleet"),
                "--shape",
                "step",
                "--first-device",
                str(self.next_device % a.devices),
                "--rate",
                f"{start:g}",
                "--step-rate",
                f"{add:g}",
                "--step-seconds",
                f"{a.step_seconds:g}",
                "--steps",
                str(steps),
                "--results-dir",
                f"{prefix}-swarm",
                "--csv",
                str(prefix),
            ],
            prefix.with_suffix(".log"),
        )
        self.active.append(proc)
        sampler = Sampler(hub, proc.pid, f"w{workers}", workers, self.hub_cores(workers), self.t_origin)
        sampler.start()
        try:
            first_ok, end_at = None, deadline
            self.stopped_live = False
            while proc.poll() is None and time.time() < end_at:
                time.sleep(0.5)
                rows = sampler.samples
                if first_ok is None:
                    first_ok = next((r["wall"] for r in rows if r["ok_rate"] > 0), None)
                    continue
                if self.stopped_live:
                    continue
                k = int((time.time() - first_ok) // a.step_seconds)
                target = start + min(k, steps - 1) * add
                # judge a step on its samples after the ramp into it, two seconds at least
                inside = [r for r in rows if first_ok + k * a.step_seconds + 1.5 <= r["wall"]]
                why = analysis.live_break(inside[-3:], target) if len(inside) >= 2 else ""
                if why:
                    # let the step run to its end, so that it is measured whole, then stop
                    end_at = min(deadline, first_ok + (k + 1) * a.step_seconds)
                    self.stopped_live = True
                    self.say(f"  {stage}: {target:,.0f}/s looks broken ({why}); stopping after this step")
        finally:
            stopped = time.time()
            stop_swarm(proc)
            sampler.stop()
            # seconds after the swarm was told to stop measure its exit, not the load
            sampler.samples = [r for r in sampler.samples if r["wall"] <= stopped + 0.2]
            self.samples.extend(sampler.samples)
        summary = newest_summary(Path(f"{prefix}-swarm"))
        if not summary:
            self.say(f"  {stage}: the swarm wrote no summary (see {prefix.with_suffix('.log')})")
            return None
        auth = summary["authentications"]
        self.next_device += int(auth["admitted"]) + sum(auth["failures_by_code"].values())
        for code, n in summary["authentications"]["failures_by_code"].items():
            seg = self.errors.setdefault(f"{workers} worker(s), {stage}", {})
            seg[code] = seg.get(code, 0) + n
        measured = analysis.steps_from_swarm(
            summary, sampler.samples, workers, stage, self.hub_cores(workers), self.cores
        )
        self.steps.extend(measured)
        for s in measured:
            self.say(
                f"  {stage} {s['target']:>7,.0f}/s: admitted {s['achieved']:,.0f}/s, p99 {s['p99']:.1f} ms, "
                f"hub CPU {s['hub_cpu']:.0%}, generator CPU {s['gen_cpu']:.0%}"
            )
        return analysis.first_break(measured, a.slo_ms)

    def search(self, workers: int) -> None:
        """Ramp until a step breaks, then refine between the last step that held and the first that broke."""
        a = self.args
        hub = self._hub(workers, f"w{workers}")
        began = time.time()
        deadline = began + a.search_seconds
        self.say(
            f"hub with {workers} worker(s) on {self.hub_cores(workers):g} core(s) at {hub.url}: "
            f"ramp from {a.start_rate:,.0f}/s by {a.step_rate:,.0f}/s every {a.step_seconds:g} s "
            f"(bound {a.search_seconds:g} s)"
        )
        try:
            start, retried, broke = a.start_rate, set(), None
            while deadline - time.time() > 2 * a.step_seconds:
                steps = max(2, int((deadline - time.time()) // a.step_seconds))
                broke = self._stepped(hub, workers, "ramp", start, a.step_rate, steps, deadline)
                if broke is None and self.stopped_live:
                    # what looked broken live held once measured whole: climb on from the next rate
                    start = (
                        max((s["target"] for s in self.steps if s["workers"] == workers), default=start - a.step_rate)
                        + a.step_rate
                    )
                    continue
                if broke is None or analysis.side_of(broke) != "neither" or broke["target"] in retried:
                    break
                # Neither side saturated: on a shared machine that is often a noisy second, not a knee.
                # Try that rate once more before believing it.
                retried.add(broke["target"])
                self.say(f"  {broke['target']:,.0f}/s broke with neither side saturated; trying it again")
                start = broke["target"]
            if broke:
                good = max(
                    (
                        s["target"]
                        for s in self.steps
                        if s["workers"] == workers and s["target"] < broke["target"] and analysis.holds(s, a.slo_ms)
                    ),
                    default=0.0,
                )
                gap = broke["target"] - good
                if gap > 0 and deadline - time.time() > 2 * a.step_seconds:
                    self.say(f"  refining between {good:,.0f}/s and {broke['target']:,.0f}/s")
                    again = self._stepped(hub, workers, "refine", good + gap / 4, gap / 4, 3, deadline)
                    broke = again or broke
        finally:
            hub.stop()
            self._drop_guard(hub)
        self.searches.append(
            {"workers": workers, "seconds": round(time.time() - began, 1), "bound_s": a.search_seconds, "broke": broke}
        )
        self.save()

    def storm(self, workers: int, expected_rate: float | None) -> None:
        """All devices at once against a throttled hub, until every one is admitted or twice the simulated
        time to admit them (at least 20 s, at most ``--storm-timeout``)."""
        from certstorm.capacity.planner import simulate_storm
        from devicekit.backoff import preset

        a = self.args
        backoff = preset(a.backoff).vectorized()
        capacity = a.storm_quota or expected_rate or 1000.0
        sims = [
            simulate_storm(a.storm_devices, capacity, backoff, attempt_rate=r, horizon=a.storm_timeout * 2)
            for r in (None, expected_rate)
        ]
        simulated = max(s.time_to_admit for s in sims)
        bound = min(a.storm_timeout, max(20.0, 2 * simulated))
        extra = ("--quota", f"{a.storm_quota:g}") if a.storm_quota else ()
        hub = self._hub(workers, "storm", extra)
        self.say(
            f"reconnect storm: {a.storm_devices:,} devices at once, backoff {a.backoff}, hub quota "
            f"{a.storm_quota or 'none'}/s; simulated time to admit all {simulated:.1f} s, so run until all are "
            f"admitted or {bound:.0f} s"
        )
        swarm_dir = self.raw / "storm-swarm"
        proc = start_swarm(
            [
                *self._target(hub),
                "--fleet",
                str(self.dir / "fleet"),
                "--shape",
                "storm",
                "--storm-devices",
                str(a.storm_devices),
                "--backoff",
                a.backoff,
                "-t",
                f"{bound:.0f}s",
                "--results-dir",
                str(swarm_dir),
                "--csv",
                str(self.raw / "storm"),
            ],
            self.raw / "storm.log",
        )
        self.active.append(proc)
        try:
            proc.wait(bound + 40)
        except subprocess.TimeoutExpired:
            self.say("  the swarm did not end in time; stopping it")
        finally:
            stop_swarm(proc)
            hub.stop()
            self._drop_guard(hub)
        summary = newest_summary(swarm_dir)
        curve = (summary or {}).get("admission_curve")
        if not curve:
            self.say("  the storm admitted nobody or wrote no summary")
            return
        step = curve.get("bucket_s", 0.1)
        pts = [[round((i + 1) * step, 3), c] for i, c in enumerate(curve["admitted_cumulative"])]
        busy = sorted(x for x in curve.get("attempts", []) if x > 0)
        # The swarm's connection slots cap its attempts per second; the simulation must know that cap
        # (real devices have none). The 95th percentile of busy buckets is its sustained rate.
        attempt_rate = busy[int(0.95 * (len(busy) - 1))] / step if busy else None
        (self.raw / "storm.json").write_text(
            json.dumps(
                {
                    "devices": curve.get("devices", a.storm_devices),
                    "capacity": a.storm_quota or None,
                    "backoff": a.backoff,
                    "curve": pts,
                    "retries": int(sum(curve.get("refused", []))),
                    "attempt_rate": attempt_rate,
                    "bound_s": bound,
                    "simulated_before_s": simulated,
                    "failures_by_code": summary["authentications"]["failures_by_code"],
                }
            )
        )
        admitted = pts[-1][1] if pts else 0
        self.say(f"  admitted {admitted:,} of {a.storm_devices:,} in {pts[-1][0] if pts else 0:.1f} s")

    def _drop_guard(self, hub: HubProcess) -> None:
        """The replay guard is sized for millions of live nonces (tens of MB); it holds nothing the report
        needs once the hub has stopped."""
        for path in Path(hub.db).parent.glob(Path(hub.db).name + ".guard*"):
            path.unlink(missing_ok=True)

    def compress_raw(self) -> None:
        """Locust's CSVs, the logs and the hubs' databases, gzipped: run folders stay small."""
        for lock in self.dir.glob("hub-*.lock"):
            lock.unlink()
        for path in [
            *self.raw.glob("*.csv"),
            *self.raw.glob("*.log"),
            *self.dir.glob("*.std*"),
            *self.dir.glob("hub-*.db"),
        ]:
            with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            path.unlink()

    def cleanup(self) -> None:
        for item in reversed(self.active):
            if isinstance(item, HubProcess):
                try:
                    item.stop(10)
                except Exception:
                    item.kill()
                self._drop_guard(item)
            else:
                stop_swarm(item, 10)


def run_command(args) -> int:
    run = Run(args)
    run.say(f"certstorm run {run.run_id} → {run.dir} (devices over {args.transport})")
    if run.config()["shared_cores"]:
        run.say(
            f"note: {run.cores} core(s) here; hub and generator share cores for worker counts above "
            f"{run.cores - GEN_CORES}"
        )
    interrupted = False
    try:
        run.floor()
        run.fleet()
        for w in run.workers:
            run.search(w)
        if args.storm_devices:
            top = max(run.workers)
            rates = [s["achieved"] for s in run.steps if s["workers"] == top and analysis.holds(s, args.slo_ms)]
            run.storm(top, max(rates, default=None))
    except KeyboardInterrupt:
        interrupted = True
        run.say("interrupted: stopping the hub and the swarm, writing what was measured")
    finally:
        run.cleanup()
        run.save()
    shutil.rmtree(run.dir / "fleet", ignore_errors=True)  # identities are re-creatable; keep results small
    run.compress_raw()
    summary = build_report(run.dir)
    latest = Path(args.out) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    latest.symlink_to(run.run_id)
    print()
    print(summary["first_line"])
    cost = summary["cost"]
    if cost["hub_us_per_auth"]:
        mix = (
            ""
            if cost.get("reconnect_share") is None
            else f" ({cost['reconnect_share']:.0%} of the admissions there were reconnects through the device cache)"
        )
        print(
            f"hub CPU per authentication at the knee: {cost['hub_us_per_auth']:.0f} µs = "
            f"{cost['floor_multiple']:.2f}× the crypto floor{mix}"
        )
    print(f"report: {run.dir / 'report.html'}  (also {latest}/report.html)")
    failed = check_requirements(args.require, summary)
    for line in failed:
        print(f"requirement not met: {line}")
    if interrupted:
        return 130
    return 1 if failed else 0


def add_run_arguments(p) -> None:
    p.add_argument(
        "--devices",
        type=integer(1),
        default=250_000,
        help="fleet size (default 250000: more than a default search admits, so the knee is of first "
        "connections; a smaller fleet makes later steps reconnects, which the report counts)",
    )
    p.add_argument(
        "--workers",
        type=integer_list(1),
        default=None,
        help="hub worker counts to measure, comma-separated (default: from the machine, never more "
        "than the cores left beside the generator's one)",
    )
    p.add_argument(
        "--start-rate", type=number(0, low_open=True), default=500.0, help="the ramp's first authentications/s"
    )
    p.add_argument("--step-rate", type=number(0, low_open=True), default=500.0, help="added per ramp step")
    p.add_argument(
        "--step-seconds", type=number(0, low_open=True), default=5.0, help="length of a step (ramp and refine)"
    )
    p.add_argument(
        "--search-seconds",
        type=number(0, low_open=True),
        default=80.0,
        help="time bound of the knee search per worker count (default 80)",
    )
    p.add_argument("--storm-devices", type=integer(0), default=2000, help="devices in the reconnect storm (0: none)")
    p.add_argument(
        "--storm-quota",
        type=number(0),
        default=500.0,
        help="hub admission quota during the storm, per second (0: unlimited)",
    )
    p.add_argument(
        "--storm-timeout",
        type=number(0, low_open=True),
        default=120.0,
        help="cap on the storm's duration; it otherwise runs to twice its simulated time to admit all",
    )
    p.add_argument(
        "--backoff", default="azure-c", choices=sorted(PRESETS), help="reconnect backoff preset for the storm"
    )
    p.add_argument(
        "--slo-ms", type=number(0, low_open=True), default=500.0, help="p99 latency objective for the knee (ms)"
    )
    p.add_argument("--plan-devices", type=integer(1), default=2_000_000, help="projection: devices to admit")
    p.add_argument(
        "--plan-window", type=number(0, low_open=True), default=600.0, help="projection: within this many seconds"
    )
    p.add_argument(
        "--require",
        type=parse_requirement,
        action="append",
        default=[],
        metavar="EXPR",
        help="a threshold the run must meet, else it exits 1: knee>=2000/s, p99<=50ms, errors<=0.1%%, "
        "storm_admitted>=99%% (repeatable)",
    )
    p.add_argument("--out", default="results", help="where run folders go (default results/)")
    p.add_argument(
        "--transport",
        choices=("http", "mqtts"),
        default="http",
        help="how devices reach the hub: the HTTP two-step exchange (default) or MQTT over mutual "
        "TLS (the hub's --mqtts-port listener, cached validation, no session resumption)",
    )


__all__ = ["Run", "add_run_arguments", "default_workers", "run_command"]
