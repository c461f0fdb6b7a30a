"""``certstorm run``: the main job. Measures the crypto floor, makes or opens a fleet, and searches the
saturation knee of a hub it starts (at each hub worker count) or of any system at ``--target``, with as
many generator processes and hosts as it takes; then a reconnect storm; then the report in
``results/<run-id>/``.

Everything measured lands in ``raw/`` first (see :mod:`certstorm.capacity.report`); the report is built
from it at the end, and again on Ctrl-C with whatever was measured by then.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import socket
import sys
import time
from pathlib import Path

import psutil

from certstorm.capacity import analysis
from certstorm.capacity.drive import SearchFailed, drive_search
from certstorm.capacity.report import build_report, link_latest
from certstorm.capacity.requirements import check_requirements, parse_requirement
from certstorm.capacity.sampler import SecondSampler
from certstorm.capacity.search import SearchSettings
from certstorm.capacity.storm import run_storm
from certstorm.capacity.target import MetricsMeter, PidMeter, TargetError, parse_target
from certstorm.floor import FloorProbe
from certstorm.processes import HubProcess, SwarmGroup, worker_command
from devicekit.backoff import PRESETS
from devicekit.fleet import NO_TOKEN_KEYS_OVER_MQTTS, Fleet, generate_fleet
from devicekit.hsm import TokenError
from devicekit.profiles import device_profile, network_profile
from hubsim.argtypes import integer, integer_list, number

__all__ = ["Run", "add_run_arguments", "default_workers", "run_command"]

DERIVED_SEED = "certstorm-run-"  # + run id: the fleet every generator host derives alike


def default_workers(cores: int, generator_cores: int = 1) -> list[int]:
    """Hub worker counts that fit beside the generator: never more than the cores left after its own."""
    top = max(1, cores - generator_cores)
    return sorted({1, min(2, top), min(3, top), top})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _this_host() -> str:
    """This machine's name, as the command printed for other hosts says it."""
    return socket.getfqdn()


class RunError(Exception):
    """A run that cannot go on: ``code`` 2 for what the operator must change, 1 for what was measured."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class Run:
    def __init__(self, args):
        self.args = args
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        self.dir = Path(args.out) / self.run_id
        self.raw = self.dir / "raw"
        self.cores = psutil.cpu_count() or 1
        self.target = parse_target(args.target) if args.target else None
        self.meter = None
        self.local_generators = args.swarm_processes or (0 if args.swarm_workers else 1)
        self.generator_cores = max(1, args.swarm_processes)
        self.workers = [None] if self.target else (args.workers or default_workers(self.cores, self.generator_cores))
        # absolute: the swarm runs from the installed package's folder, not from here
        self.fleet_dir: Path | None = Path(args.fleet).resolve() if args.fleet else None
        self.steps: list[dict] = []
        self.segments: list[dict] = []
        self.errors: dict[str, dict[str, int]] = {}
        self.t_origin = time.time()
        # how this run was asked for, so the report can say how to ask for more generator capacity
        self.command = ["certstorm", "run", *getattr(args, "argv", [])]
        self.active: list = []
        self.refused = False

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t_origin:6.1f}s] {text}", flush=True)

    # -- what the run is asked to do, checked before anything is made -------------------------------------
    def check(self) -> None:
        a = self.args
        if self.target:
            if a.workers:
                raise TargetError(
                    "--workers", "sets the worker counts of the hub a run starts; --target is measured as it runs"
                )
            if a.transport != "http" and a.transport != self.target.transport:
                raise TargetError("--transport", f"the target {self.target.url} says how devices connect")
            self.target.check_reachable()
            if self.target.transport == "mqtts" and not (a.fleet or a.hub_url):
                raise TargetError(
                    "--fleet",
                    "a broker admits devices by the CA it trusts: make a fleet "
                    "(certstorm fleet --devices N --out DIR), add DIR/ca.pem to the broker's "
                    "CA file, and pass --fleet DIR (or --hub-url for a certstorm hub)",
                )
            if a.target_pid is not None:
                self.meter = PidMeter(a.target_pid)
            elif a.target_metrics:
                self.meter = MetricsMeter(a.target_metrics)
            if self.meter is not None and a.target_cores:
                self.meter.cores = a.target_cores
        elif a.target_pid is not None or a.target_metrics:
            raise TargetError(
                "--target-pid" if a.target_pid is not None else "--target-metrics",
                "names the target's CPU: give --target too (a hub the run starts is measured itself)",
            )
        if self.fleet_dir is not None:
            try:
                fleet = Fleet.open(self.fleet_dir)  # a token fleet logs in and finds every device's key
            except TokenError as exc:
                raise TargetError("--fleet", str(exc)) from None
            except (ValueError, OSError) as exc:
                raise TargetError("--fleet", f"{self.fleet_dir} is not a fleet ({exc})") from None
            keys = fleet.meta.get("keys")
            fleet.close()
            if keys == "pkcs11" and self.transport == "mqtts":
                raise TargetError("--fleet", NO_TOKEN_KEYS_OVER_MQTTS)
        if a.swarm_workers and len(self.workers) > 1:
            raise TargetError("--swarm-workers", "workers on other hosts join one search: give one --workers count")

    def config(self) -> dict:
        a = self.args
        return {
            "devices": a.devices,
            "workers": self.workers,
            "workers_from": "target" if self.target else ("argument" if a.workers else "machine"),
            "target": self._target_config(),
            "search": {
                "start": a.start_rate,
                "add": a.step_rate,
                "seconds": a.step_seconds,
                "bound_s": a.search_seconds,
                "ceiling_s": a.ceiling_seconds,
            },
            "storm": {
                "devices": a.storm_devices,
                "backoff": a.backoff,
                "quota": a.storm_quota,
                "cap_s": a.storm_timeout,
                "device_profile": a.device_profile,
                "network": a.network,
                "slots": a.storm_slots or None,
            },
            "slo_p99_ms": a.slo_ms,
            "hub_cores": {str(w): self.hub_cores(w) for w in self.workers if w},
            "generator": {
                "local_processes": self.local_generators,
                "remote_workers": a.swarm_workers,
                "cores": self.generator_cores,
                "port": a.swarm_port,
                "host": _this_host(),
            },
            "command": self.command,
            "generator_cores": self.generator_cores,
            "machine_cores": self.cores,
            "origin": self.t_origin,
            "shared_cores": any(w and w + self.generator_cores > self.cores for w in self.workers),
            "projection": {"devices": a.plan_devices, "window_s": a.plan_window},
            "requires": [r.text for r in a.require],
            "transport": self.transport,
        }

    def _target_config(self) -> dict:
        if self.target is None:
            return {
                "url": None,
                "kind": "hub",
                "name": "the certstorm hub this run started",
                "cpu": "its worker processes",
                "cost_known": True,
            }
        return {
            "url": self.target.url,
            "kind": "target",
            "name": self.target.url,
            "cpu": self.meter.describe() if self.meter else None,
            "cost_known": self.meter is not None,
            "cores": self.meter.cores if self.meter else None,
        }

    @property
    def transport(self) -> str:
        return self.target.transport if self.target else self.args.transport

    def hub_cores(self, workers: int) -> float:
        """The cores a hub of ``workers`` processes can have beside the generator's."""
        return float(max(1, min(workers, self.cores - self.generator_cores)))

    def save(self) -> None:
        self.raw.mkdir(parents=True, exist_ok=True)
        (self.raw / "config.json").write_text(json.dumps(self.config(), indent=1))
        for name, data in (("steps", self.steps), ("segments", self.segments), ("errors", self.errors)):
            (self.raw / f"{name}.json").write_text(json.dumps(data))

    # -- phases -------------------------------------------------------------------------------------------
    def floor(self) -> None:
        probe = FloorProbe()
        verify = min(probe.run(500) / 500 for _ in range(5)) / 2
        (self.raw / "floor.json").write_text(json.dumps({"verify_us": verify * 1e6}))
        self.say(f"crypto floor: one raw P-256 verify = {verify * 1e6:.0f} µs")

    def fleet(self) -> None:
        if self.fleet_dir is not None:
            self.say(f"fleet: {self.fleet_dir} (made beforehand)")
            return
        self.fleet_dir = self.dir / "fleet"
        self.say(f"making a fleet of {self.args.devices:,} devices (supply chain Company-X → Factory-Y → Technician-Z)")
        seed = DERIVED_SEED + self.run_id if self.args.swarm_workers else None
        generate_fleet(self.fleet_dir, self.args.devices, progress=sys.stderr.isatty(), seed=seed)

    def fleet_args(self) -> list[str]:
        if self.args.swarm_workers and not self.args.fleet:
            # generator hosts cannot read this machine's folder: every one derives the same seeded fleet
            return ["--devices", str(self.args.devices), "--seed", DERIVED_SEED + self.run_id]
        return ["--fleet", str(self.fleet_dir)]

    def _hub(self, workers: int, name: str, extra=()) -> HubProcess:
        if self.transport == "mqtts":
            extra = (*extra, "--mqtts-port", "0")
        hub = HubProcess(self.dir / f"hub-{name}.db", workers=workers, args=tuple(extra)).start()
        self.active.append(hub)
        return hub

    def target_args(self, hub: HubProcess | None) -> list[str]:
        """The swarm's options that point it at the target, with what registers the fleet's CA."""
        a = self.args
        if hub is not None:
            token = ["--admin-token-file", hub.admin_token_path]
            if self.transport == "mqtts":
                return ["--host", hub.mqtts_url, "--hub-url", hub.url, "--tls-ca", hub.tls_ca, *token]
            return ["--host", hub.url, *token]
        out = ["--host", self.target.url]
        for flag, value in (
            ("--hub-url", a.hub_url),
            ("--admin-token-file", a.admin_token_file),
            ("--tls-ca", a.tls_ca),
            ("--tls-server-name", a.tls_server_name),
            ("--mqtt-username", a.mqtt_username),
        ):
            if value:
                out += [flag, value]
        return out

    def search(self, workers: int | None) -> None:
        """One knee search: against a hub of ``workers`` processes started for it, or against the target."""
        a = self.args
        name = f"w{workers}" if workers else "target"
        hub = self._hub(workers, name) if workers else None
        meter = PidMeter(hub.proc.pid, "hub") if hub else self.meter
        if hub:
            meter.cores = self.hub_cores(workers)
        where = (
            f"hub with {workers} worker(s) on {self.hub_cores(workers):g} core(s) at {hub.url}"
            if hub
            else f"target {self.target.url}" + (f" ({meter.describe()})" if meter else " (its CPU unknown)")
        )
        self.say(
            f"{where}: ramp from {a.start_rate:,.0f}/s by {a.step_rate:,.0f}/s every {a.step_seconds} s "
            f"(bound {a.search_seconds:g} s)"
        )
        sampler = SecondSampler(meter, hub)
        sampler.start()
        remote = a.swarm_workers
        port = a.swarm_port if remote else _free_port()
        group = SwarmGroup(
            [
                *self.target_args(hub),
                *self.fleet_args(),
                "--shape",
                "follow",
                "--schedule-file",
                str(self.raw / f"{name}-schedule.json"),
                "--live-file",
                str(self.raw / f"{name}-live.jsonl"),
                "--results-dir",
                str(self.raw / f"{name}-swarm"),
                "--csv",
                str(self.raw / name),
            ],
            self.raw,
            name,
            local=a.swarm_processes,
            remote=remote,
            port=port,
            wait_s=a.swarm_wait,
        )
        self.active.append(group)
        if remote:
            self.say(
                f"  waiting up to {a.swarm_wait:g} s for {remote} swarm worker(s): on each generator host run "
                f"'{worker_command(_this_host(), port)}'"
            )
        segment = {
            "name": name,
            "workers": workers,
            "target_cores": meter.cores if meter else None,
            "machine_cores": self.cores,
        }
        settings = SearchSettings(
            start=a.start_rate,
            add=a.step_rate,
            step_s=a.step_seconds,
            bound_s=a.search_seconds,
            slo_ms=a.slo_ms,
            ceiling_s=a.ceiling_seconds,
            ceiling_slots=a.ceiling_slots or 40 * (workers or 1),
        )
        expected = (a.swarm_processes + remote) or 1
        try:
            result = drive_search(
                group,
                self.raw / f"{name}-schedule.json",
                self.raw / f"{name}-live.jsonl",
                sampler,
                settings,
                segment,
                expected=expected,
                ready_timeout=a.swarm_wait + 120,
                origin=self.t_origin,
                say=self.say,
            )
        except SearchFailed as exc:
            hint = f"; start them with '{worker_command(_this_host(), port)}'" if remote else ""
            raise RunError(f"the swarm could not run: {exc}{hint}") from None
        finally:
            group.stop()
            sampler.stop()
            if hub:
                hub.stop()
                self._drop_guard(hub)
        self._keep(name, result, segment, settings)
        if result.refused:
            self.refused = True

    def _keep(self, name: str, result, segment: dict, settings: SearchSettings) -> None:
        for kind, data in (("schedule", result.schedule), ("seconds", result.seconds), ("samples", result.samples)):
            (self.raw / f"{name}-{kind}.json").write_text(json.dumps(data))
        self.steps.extend(result.steps)
        search_s = (result.stop_at - result.first_at) if result.stop_at and result.first_at else None
        in_windows = sum(s["seconds"] for s in result.steps)
        self.segments.append(
            {
                **segment,
                "bound_s": settings.bound_s,
                "seconds": search_s,
                "in_windows_s": in_windows,
                "settle_s": sum(e["seconds"] for e in result.schedule if e.get("stage") == "settle"),
                "startup_s": (result.first_at - result.started_at) if result.first_at else None,
                "stopped": result.why_stopped,
                "generators": {
                    str(w): {
                        "host": s.get("hello", {}).get("host"),
                        "pid": s.get("hello", {}).get("pid"),
                        "missing_at": s.get("missing") - self.t_origin if s.get("missing") else None,
                    }
                    for w, s in result.workers.items()
                },
                "workers_lost": {str(w): t - self.t_origin for w, t in result.lost.items()},
            }
        )
        summary = _newest(self.raw / f"{name}-swarm")
        codes = (summary or {}).get("authentications", {}).get("failures_by_code", {})
        if codes:
            self.errors[f"{name}, knee search"] = codes
        for s in result.steps:
            rate = "closed loop" if s["target"] is None else f"{s['target']:>7,.0f}/s"
            self.say(
                f"  {s['stage']:>7} {rate}: admitted {s['achieved']:,.0f}/s over {s['seconds']} s, p99 "
                f"{s['p99'] if s['p99'] is not None else float('nan'):.1f} ms"
                + (f", target CPU {s['target_cpu']:.0%}" if s["target_cpu"] is not None else "")
                + f", busiest generator {s['gen_cpu']:.0%}"
            )
        self.save()

    def storm(self, expected_rate: float | None) -> None:
        a = self.args
        hub = None
        if not self.target:
            extra = ("--quota", f"{a.storm_quota:g}") if a.storm_quota else ()
            hub = self._hub(max(w for w in self.workers if w), "storm", extra)
        try:
            record = run_storm(self, hub, expected_rate)
        finally:
            if hub:
                hub.stop()
                self._drop_guard(hub)
        if record:
            (self.raw / "storm.json").write_text(json.dumps(record))

    def _drop_guard(self, hub: HubProcess) -> None:
        """The replay guard is sized for millions of live nonces (tens of MB); it holds nothing the report
        needs once the hub has stopped."""
        for path in Path(hub.db).parent.glob(Path(hub.db).name + ".guard*"):
            path.unlink(missing_ok=True)

    def compress_raw(self) -> None:
        """Locust's CSVs, the logs, the live records and the hubs' databases, gzipped: run folders stay small."""
        for lock in self.dir.glob("hub-*.lock"):
            lock.unlink()
        for path in [
            *self.raw.glob("*.csv"),
            *self.raw.glob("*.log"),
            *self.raw.glob("*.jsonl"),
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
                item.stop(10)


def _newest(directory: Path) -> dict | None:
    found = sorted(directory.rglob("summary.json"), key=lambda p: p.stat().st_mtime) if directory.exists() else []
    return json.loads(found[-1].read_text()) if found else None


def _fail(message: str, code: int) -> int:
    print(f"certstorm run: error: {message}", file=sys.stderr)
    return code


def run_command(args) -> int:
    if getattr(args, "dps", False):  # through DPS: certstorm/capacity/dps.py
        from certstorm.capacity.dps import dps_run_command

        return dps_run_command(args)
    try:
        run = Run(args)
        run.check()
    except TargetError as exc:
        return _fail(str(exc), 2)
    run.raw.mkdir(parents=True, exist_ok=True)
    where = run.target.url if run.target else "a hub it starts"
    run.say(f"certstorm run {run.run_id} → {run.dir} (devices over {run.transport} to {where})")
    if run.config()["shared_cores"]:
        run.say(
            f"note: {run.cores} core(s) here; hub and generator share cores for worker counts above "
            f"{run.cores - run.generator_cores}"
        )
    interrupted, failed_run = False, None
    try:
        run.floor()
        run.fleet()
        for w in run.workers:
            run.search(w)
            if run.refused:
                break
        if args.storm_devices and not run.refused:
            knees = [s["achieved"] for s in run.steps if s["stage"] != "ceiling" and analysis.holds(s, args.slo_ms)]
            run.storm(max(knees, default=None))
    except KeyboardInterrupt:
        interrupted = True
        run.say("interrupted: stopping the hub and the swarm, writing what was measured")
    except RunError as exc:
        failed_run = exc
        run.say(str(exc))
    finally:
        run.cleanup()
        run.save()
    if run.fleet_dir and run.fleet_dir.parent == run.dir:
        shutil.rmtree(run.fleet_dir, ignore_errors=True)  # identities are re-creatable; keep results small
    run.compress_raw()
    summary = build_report(run.dir)
    latest = link_latest(Path(args.out), "latest", run.run_id)
    print()
    print(summary["first_line"])
    cost = summary["cost"]
    if cost["target_us_per_auth"]:
        print(
            f"{summary['target']['noun']} CPU per authentication at the knee: {cost['target_us_per_auth']:.0f} µs = "
            f"{cost['floor_multiple']:.2f}× the crypto floor"
        )
    print(f"report: {run.dir / 'report.html'}  (also {latest}/report.html)")
    if failed_run is not None:
        return _fail(str(failed_run), failed_run.code)
    if run.refused:
        codes = ", ".join(f"{c} × {n:,}" for seg in run.errors.values() for c, n in seg.items()) or "no code"
        return _fail(f"the target refused every authentication of the first step ({codes})", 1)
    failed = check_requirements(args.require, summary)
    for line in failed:
        print(f"requirement not met: {line}")
    if interrupted:
        return 130
    return 1 if failed else 0


def _pid(text: str) -> int:
    value = integer(1)(text)
    if not psutil.pid_exists(value):
        raise argparse.ArgumentTypeError(f"no process {value} on this machine")
    return value


def add_run_arguments(p) -> None:
    g = p.add_argument_group("what is measured")
    g.add_argument(
        "--target",
        default=None,
        metavar="URL",
        help="measure a system this run does not start: mqtts://HOST:PORT (an MQTT broker or hub over "
        "mutual TLS), http://HOST:PORT or https://HOST:PORT (a certstorm hub's device API); "
        "default: start a certstorm hub (docs/targets.md)",
    )
    g.add_argument(
        "--target-pid",
        type=_pid,
        default=None,
        metavar="PID",
        help="with --target: read its CPU from this local process and its children",
    )
    g.add_argument(
        "--target-metrics",
        default=None,
        metavar="URL",
        help="with --target: read its CPU from Prometheus text (process_cpu_seconds_total) at URL",
    )
    g.add_argument(
        "--target-cores",
        type=number(0, low_open=True),
        default=None,
        metavar="N",
        help="the cores the target may use, to judge its saturation (default: its allowed cores for "
        "--target-pid, where its busiest thread also counts; 1 for --target-metrics)",
    )
    g.add_argument(
        "--fleet",
        default=None,
        metavar="DIR",
        help="device identities made beforehand by 'certstorm fleet' (a broker must trust DIR/ca.pem); "
        "default: make a fleet of --devices in the run folder",
    )
    g.add_argument(
        "--hub-url",
        default=None,
        metavar="URL",
        help="with --target: a certstorm hub's HTTP URL, to register the fleet's CA there",
    )
    g.add_argument(
        "--admin-token-file",
        default=None,
        metavar="PATH",
        help="with --hub-url or an http:// target: the hub's management token",
    )
    g.add_argument("--tls-ca", default=None, metavar="FILE", help="mqtts targets: the server's CA certificate")
    g.add_argument("--tls-server-name", default=None, metavar="NAME", help="mqtts targets: the TLS server name")
    g.add_argument(
        "--mqtt-username",
        default=None,
        metavar="TEMPLATE",
        help="mqtts targets: CONNECT username with {device_id} and {hub}",
    )
    g.add_argument(
        "--workers",
        type=integer_list(1),
        default=None,
        help="hub worker counts to measure, comma-separated (default: from the machine, never more "
        "than the cores left beside the generator's)",
    )
    g.add_argument(
        "--transport",
        choices=("http", "mqtts"),
        default="http",
        help="how devices reach the hub this run starts: the HTTP two-step exchange (default) or MQTT "
        "over mutual TLS (the hub's --mqtts-port listener, cached validation, no resumption)",
    )
    g.add_argument(
        "--devices",
        type=integer(1),
        default=250_000,
        help="fleet size (default 250000: more than a default search admits, so the knee is of first "
        "connections; a smaller fleet makes later steps reconnects, which the report shows apart and "
        "does not judge)",
    )
    s = p.add_argument_group("the generator")
    s.add_argument(
        "--swarm-processes",
        type=integer(1),
        default=0,
        metavar="K",
        help="K local swarm worker processes under a master (default: one swarm process)",
    )
    s.add_argument(
        "--swarm-workers",
        type=integer(1),
        default=0,
        metavar="N",
        help="wait for N swarm workers on other hosts ('certstorm swarm --worker --master-host "
        "THIS-HOST --master-port PORT'), beside --swarm-processes (docs/targets.md)",
    )
    s.add_argument(
        "--swarm-port",
        type=integer(1, 65535),
        default=5557,
        metavar="PORT",
        help="the master's port for workers on other hosts (default 5557)",
    )
    s.add_argument(
        "--swarm-wait",
        type=number(1),
        default=60.0,
        metavar="S",
        help="how long to wait for the swarm workers to connect (default 60)",
    )
    k = p.add_argument_group("the knee search")
    k.add_argument(
        "--start-rate", type=number(0, low_open=True), default=500.0, help="the ramp's first authentications/s"
    )
    k.add_argument("--step-rate", type=number(0, low_open=True), default=500.0, help="added per ramp step")
    k.add_argument("--step-seconds", type=integer(3, 600), default=5, help="whole seconds per step (default 5)")
    k.add_argument(
        "--search-seconds",
        type=number(10),
        default=80.0,
        help="time bound of the knee search per worker count or target: ramp, refinement and ceiling (default 80)",
    )
    k.add_argument(
        "--ceiling-seconds",
        type=integer(0, 600),
        default=10,
        help="the closed-loop step at saturation after the search, in whole seconds (0: none; default 10)",
    )
    k.add_argument(
        "--ceiling-slots",
        type=integer(1),
        default=0,
        metavar="N",
        help="connections the closed-loop step keeps busy (default 40 per hub worker)",
    )
    k.add_argument(
        "--slo-ms", type=number(0, low_open=True), default=500.0, help="p99 latency objective for the knee (ms)"
    )
    t = p.add_argument_group("the storm and the answers")
    t.add_argument("--storm-devices", type=integer(0), default=2000, help="devices in the reconnect storm (0: none)")
    t.add_argument(
        "--storm-quota",
        type=number(0),
        default=500.0,
        help="the started hub's admission quota during the storm, per second (0: unlimited)",
    )
    t.add_argument(
        "--storm-timeout",
        type=number(0, low_open=True),
        default=120.0,
        help="cap on the storm's duration; it otherwise runs to twice its simulated time to admit all",
    )
    t.add_argument(
        "--backoff", default="azure-c", choices=sorted(PRESETS), help="reconnect backoff preset for the storm"
    )
    t.add_argument(
        "--device-profile",
        type=device_profile,
        default="software",
        metavar="MIX",
        help="the storm's devices: each one's signing latency, waited, from its class or a mix such as "
        "secure-element:70,tpm:30 (docs/profiles.md; default software)",
    )
    t.add_argument(
        "--storm-slots",
        type=integer(0, 10_000),
        default=0,
        metavar="N",
        help="connection slots of the storm's swarm (default 0: twice the quota times the time the profile adds "
        "per attempt, from 100 to 2000)",
    )
    t.add_argument(
        "--network",
        type=network_profile,
        default="loopback",
        metavar="MIX",
        help="the storm's devices: round-trip time added per exchange, e.g. lte-m (default loopback)",
    )
    t.add_argument("--plan-devices", type=integer(1), default=2_000_000, help="projection: devices to admit")
    t.add_argument(
        "--plan-window", type=number(0, low_open=True), default=600.0, help="projection: within this many seconds"
    )
    t.add_argument(
        "--require",
        type=parse_requirement,
        action="append",
        default=[],
        metavar="EXPR",
        help="a threshold the run must meet, else it exits 1: knee>=2000/s, p99<=50ms, errors<=0.1%%, "
        "storm_admitted>=99%% (repeatable)",
    )
    t.add_argument("--out", default="results", help="where run folders go (default results/)")
    from certstorm.capacity.dps import add_dps_run_arguments

    add_dps_run_arguments(p)
