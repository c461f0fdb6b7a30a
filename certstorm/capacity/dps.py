"""``certstorm run --dps --hubs N``: the main job through a Device Provisioning Service. It starts DPS and
N hubs, enrolls a derived fleet, and measures with the swarm's provisioning step (docs/dps.md):

1. the knee of provisioning: a ramp of registrations per second through DPS (provision only);
2. the knee of connecting: a ramp of devices connecting to one hub over MQTT with mutual TLS;
3. a storm of devices provisioning and then connecting to their hubs at once, measured beside the storm
   simulator's prediction at the measured provisioning knee (or DPS's quota, when lower);
4. how devices spread over the hubs (DPS's own counts, with the policy's fairness),

and writes ``results/<run-id>-dps/`` with ``summary.json`` and ``report.md``, which also quotes Azure's
documented DPS throttles and what the measured knee is in those units. CPU of DPS and the hubs is read
from their processes before and after each stage (psutil).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from certstorm.capacity import analysis
from certstorm.capacity.planner import simulate_storm
from certstorm.capacity.report import link_latest
from certstorm.processes import DpsProcess, HubProcess, cpu_seconds, newest_summary, start_swarm, stop_swarm
from devicekit.backoff import preset
from devicekit.fleet import derive_fleet
from hubsim.argtypes import integer, number
from hubsim.dps.cli import REGISTRATIONS_PER_MINUTE, REGISTRATIONS_PER_UNIT, dps_quota
from hubsim.dps.engine import ALLOCATIONS
from loadgen import spread

__all__ = ["AZURE_DPS_LIMITS", "add_dps_run_arguments", "dps_run_command", "knee", "report"]

SOURCE = (
    "What is Azure IoT Hub Device Provisioning Service?, Quotas and Limits: "
    "https://learn.microsoft.com/azure/iot-dps/about-iot-dps#quotas-and-limits"
)
AZURE_DPS_LIMITS = {  # per unit, as that page gives them
    "operations_per_min": 1000,
    "device_registrations_per_min": REGISTRATIONS_PER_MINUTE,  # what --quota S1 throttles to
    "device_polls_per_10s_per_device": 5,
}
SEED = "certstorm-dps-run-"


def add_dps_run_arguments(p) -> None:
    g = p.add_argument_group("through DPS (docs/dps.md)")
    g.add_argument("--dps", action="store_true", help="start DPS and --hubs hubs; measure provisioning and connecting")
    g.add_argument("--hubs", type=integer(1, 16), default=2, metavar="N", help="--dps: hubs DPS allocates over (2)")
    g.add_argument("--dps-allocation", choices=ALLOCATIONS, default="evenly", help="--dps: the group's policy")
    g.add_argument("--dps-devices", type=integer(100), default=20_000, metavar="N", help="--dps: fleet size (20000)")
    g.add_argument(
        "--dps-quota",
        type=dps_quota,
        default=None,
        metavar="S1[:UNITS]|RATE",
        help="--dps: DPS's registration throttle (default none: measure DPS's own capacity)",
    )
    g.add_argument("--dps-start-rate", type=number(0, low_open=True), default=50.0, help="--dps: first registrations/s")
    g.add_argument("--dps-step-rate", type=number(0, low_open=True), default=50.0, help="--dps: added per step")
    g.add_argument("--connect-start-rate", type=number(0, low_open=True), default=100.0, help="--dps: first connects/s")
    g.add_argument("--connect-step-rate", type=number(0, low_open=True), default=100.0, help="--dps: added per step")
    g.add_argument("--dps-steps", type=integer(1, 50), default=6, metavar="K", help="--dps: steps per ramp (6)")


def knee(phases: list[dict], slo_ms: float) -> dict | None:
    """The step that held with the highest achieved rate: not behind its target (90%, beyond counting
    noise), at most 0.1% failed, p99 within the SLO."""
    held = [
        p
        for p in phases
        if p.get("achieved_rate")
        and not analysis.behind(p["achieved_rate"], p["target_rate"], p["seconds"])
        and p.get("failed_rate", 0) <= analysis.ERROR_LIMIT * p["achieved_rate"]
        and (p.get("auth_p99_us") or math.inf) <= slo_ms * 1000
    ]
    return max(held, key=lambda p: p["achieved_rate"], default=None)


class DpsRun:
    def __init__(self, args):
        self.args = args
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-dps"
        self.dir = Path(args.out).resolve() / self.run_id  # the swarm runs in another directory
        self.raw = self.dir / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.cache = self.raw / "fleet-cache"
        self.seed = SEED + self.run_id
        self.hubs: dict[str, HubProcess] = {}
        self.dps: DpsProcess | None = None
        self.summary: dict = {"run_id": self.run_id, "hubs": args.hubs, "allocation": args.dps_allocation}

    def say(self, text: str) -> None:
        print(text, flush=True)

    # -- set-up -----------------------------------------------------------------------------------------
    def start(self) -> None:
        a = self.args
        for i in range(1, a.hubs + 1):
            hub = HubProcess(self.raw / f"hub-{i}.db", workers=1, args=("--mqtts-port", "0"))
            self.hubs[f"hub-{i}"] = hub.start()
        extra = ["--mqtts-port", "0", "--retry-after", "0"]
        if a.dps_quota is not None:
            extra += ["--quota", a.dps_quota.label if a.dps_quota.label.startswith("S1") else str(a.dps_quota.rate)]
        self.dps = DpsProcess(self.raw / "dps.db", workers=1, args=tuple(extra)).start()
        self.say(f"DPS {self.dps.url} (id scope {self.dps.id_scope}) and {a.hubs} hub(s); deriving the fleet")
        fleet = derive_fleet(a.dps_devices, seed=self.seed, cache_dir=str(self.cache))
        ca_id = self.dps.register_ca(fleet.custodian(), self.hubs.values())
        for name, hub in self.hubs.items():
            self.dps.link(hub, name)
        names = list(self.hubs)[:1] if a.dps_allocation == "static" else list(self.hubs)
        self.dps.enroll("run", ca_id, a.dps_allocation, names)

    def _pids(self) -> list[int]:
        pids = []
        for process in (self.dps, *self.hubs.values()):
            info = process.healthz()
            pids += [info["supervisor"], *info["workers"]]
        return pids

    def _swarm(self, name: str, args: list[str], seconds: float, first_device: int = 0) -> dict | None:
        out = self.raw / name
        common = ["--devices", str(self.args.dps_devices), "--seed", self.seed, "--fleet-cache", str(self.cache)]
        proc = start_swarm(
            [*common, "--first-device", str(first_device), "--results-dir", str(out), *args], self.raw / f"{name}.log"
        )
        try:
            proc.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            self.say(f"  the {name} swarm did not end in time; stopping it")
        finally:
            stop_swarm(proc)
        return newest_summary(out)

    def dps_args(self) -> list[str]:
        dps = self.dps
        out = ["--host", dps.mqtts_url, "--dps", dps.mqtts_url, "--id-scope", dps.id_scope, "--dps-ca", dps.tls_ca]
        for name, hub in self.hubs.items():
            out += ["--dps-hub", f"{name}={hub.mqtts_url}", "--dps-hub-ca", f"{name}={hub.tls_ca}"]
        return [*out, "--tls-version", "1.2"]

    # -- the stages -------------------------------------------------------------------------------------
    def ramp(self, name: str, target: list[str], start: float, step: float, first_device: int) -> dict:
        a = self.args
        seconds = a.dps_steps * a.step_seconds
        ramp = ["--shape", "step", "--rate", str(start), "--step-rate", str(step)]
        ramp += ["--step-seconds", str(a.step_seconds), "--steps", str(a.dps_steps), "-t", f"{seconds + 5}s"]
        pids = self._pids()
        cpu0 = cpu_seconds(pids)
        summary = self._swarm(name, [*target, *ramp], seconds, first_device)
        cpu = cpu_seconds(pids) - cpu0
        phases = (summary or {}).get("rates", {}).get("phases", [])
        found = knee(phases, a.slo_ms)
        done = (summary or {}).get("authentications", {})
        admitted = done.get("admitted", 0)
        record = {
            "steps": phases,
            "knee_per_s": found["achieved_rate"] if found else None,
            "knee_p99_ms": round(found["auth_p99_us"] / 1000, 1) if found and found.get("auth_p99_us") else None,
            "admitted": admitted,
            "failures_by_code": done.get("failures_by_code", {}),
            "service_cpu_us_per_device": round(cpu / admitted * 1e6) if admitted else None,
            "generator_verdict": (summary or {}).get("generator_verdict"),
        }
        knee_text = f"{record['knee_per_s']:,.0f}/s" if record["knee_per_s"] else "not found (no step held)"
        cost = record["service_cpu_us_per_device"]
        self.say(f"  {name}: knee {knee_text}; {admitted:,} done; DPS and hubs' CPU {cost} µs per device")
        return record

    def storm(self, name: str) -> dict | None:
        """Every storm device provisions and connects at once (the first devices of the fleet: the ramps
        use the ones after them)."""
        a = self.args
        devices = min(a.storm_devices, a.dps_devices)
        args = ["--shape", "storm", "--storm-devices", str(devices), "--backoff", a.backoff]
        summary = self._swarm(name, [*self.dps_args(), *args, "-t", f"{a.storm_timeout:.0f}s"], a.storm_timeout)
        curve = (summary or {}).get("admission_curve") or {}
        done = (summary or {}).get("authentications", {})
        # the swarm's slots cap its attempts per second (real devices have no such cap): its sustained rate,
        # the 95th percentile of busy 0.1 s buckets, is what a fair simulation must be given
        busy = sorted(x for x in curve.get("attempts", []) if x > 0)
        step = curve.get("bucket_s", 0.1)
        record = {
            "devices": devices,
            "backoff": a.backoff,
            "measured": {f"{q}pct_s": curve.get(f"time_to_{q}pct_s") for q in (50, 90, 99, 100)},
            "attempt_rate": round(busy[int(0.95 * (len(busy) - 1))] / step, 1) if busy else None,
            "admitted": done.get("admitted", 0),
            "failures_by_code": done.get("failures_by_code", {}),
            "provisioning": (summary or {}).get("provisioning"),
        }
        self.say(f"  {name}: {record['admitted']:,} of {devices:,} in {record['measured']['100pct_s']} s")
        return record

    def simulate(self, storm: dict, capacity: float | None) -> None:
        """The storm simulator's times at the measured provisioning knee, or DPS's quota when lower: once
        with the swarm's attempt rate (what was measured), once for real devices, each with its own
        connection (no cap on attempts). The simulator refuses what exceeds the capacity and the devices
        retry with the backoff, as a throttled DPS answers 429; without --dps-quota certstorm's DPS queues
        instead, so only the capped simulation compares with the measurement."""
        quota = self.args.dps_quota.rate if self.args.dps_quota else None
        rates = [r for r in (capacity, quota) if r]
        if not rates:
            storm["simulated"] = storm["simulated_devices"] = None
            return
        rate = min(rates)
        backoff = preset(storm["backoff"]).vectorized()
        for key, cap in (("simulated", storm.get("attempt_rate")), ("simulated_devices", None)):
            sim = simulate_storm(storm["devices"], rate, backoff, attempt_rate=cap, horizon=7200.0)
            storm[key] = {f"{q}pct_s": _round(sim.time_to_fraction(q / 100)) for q in (50, 90, 99, 100)}
        storm["capacity_per_s"] = rate

    def hub_spread(self) -> dict:
        con = sqlite3.connect(f"file:{self.dps.db}?mode=ro", uri=True)
        try:
            loads = dict(con.execute("SELECT hub, devices FROM hub_load").fetchall())
        finally:
            con.close()
        return spread({name: loads.get(name, 0) for name in self.hubs})

    def stop(self) -> None:
        for process in [self.dps, *self.hubs.values()]:
            if process is None:
                continue
            try:
                process.stop()
            finally:
                process.kill()
        shutil.rmtree(self.cache, ignore_errors=True)
        for path in self.raw.glob("*.guard"):
            path.unlink(missing_ok=True)


def _round(value: float) -> float | None:
    return round(value, 1) if math.isfinite(value) else None


def report(summary: dict) -> str:
    """report.md: the answers first, then the figures they come from."""
    p, c, share = summary.get("provisioning"), summary.get("connecting"), summary["spread"]
    lines = [f"# certstorm run {summary['run_id']}: provisioning through DPS over {summary['hubs']} hub(s)", ""]

    def knee_line(label, record, noun):
        if not record:
            return f"- {label}: not measured"
        if record["knee_per_s"] is None:
            return f"- {label}: no step held (failures: {record['failures_by_code'] or 'none'}); lower the start rate"
        verdict = record.get("generator_verdict")
        return (
            f"- {label}: **{record['knee_per_s']:,.0f} {noun}/s** (p99 {record['knee_p99_ms']} ms); DPS and hubs' CPU "
            f"{record['service_cpu_us_per_device']} µs per device" + (f"; generator: {verdict}" if verdict else "")
        )

    lines += [
        knee_line("Provisioning knee (DPS, register to assigned)", p, "registrations"),
        knee_line("Connecting knee (one hub, mTLS + CONNECT)", c, "connections"),
    ]
    if p and p["knee_per_s"]:
        units = p["knee_per_s"] * 60 / AZURE_DPS_LIMITS["device_registrations_per_min"]
        lines.append(
            f"- In Azure's terms: {p['knee_per_s'] * 60:,.0f} registrations/min, what {units:,.1f} DPS unit(s) at "
            f"{AZURE_DPS_LIMITS['device_registrations_per_min']:,}/min each allow"
        )
    lines += [
        f"- Spread over the hubs ({summary['allocation']}): "
        + ", ".join(f"{h} {n:,}" for h, n in share["hubs"].items())
        + f"; Jain's fairness index {share['jain_index']}, largest share {share['max_over_mean']}× the mean, "
        f"CV {share['cv']}",
        "",
    ]
    for key, title in (("storm", "The storm through DPS"), ("reprovisioning_storm", "The re-provisioning storm")):
        storm = summary.get(key)
        if not storm:
            continue
        simulated, devices = storm.get("simulated") or {}, storm.get("simulated_devices") or {}
        at = "not simulated (no knee, no quota)"
        if storm.get("capacity_per_s"):
            cap = f"{storm['attempt_rate']:,.0f}" if storm.get("attempt_rate") else "no"
            at = f"simulated at {storm['capacity_per_s']:,.0f}/s with the swarm's cap of {cap} attempts/s"
        substatus = (storm.get("provisioning") or {}).get("substatus", {})
        lines += [
            f"## {title}: {storm['devices']:,} devices at once ({storm['backoff']} backoff)",
            "",
            f"{storm['admitted']:,} provisioned and connected; substatus {substatus or '-'}; {at}. The last "
            "column is the simulator's answer for real devices (no cap on attempts) against a DPS that refuses "
            "what exceeds that rate, as a throttled DPS does.",
            "",
            "| admitted | measured (s) | simulated, swarm's cap (s) | simulated, real devices (s) |",
            "|---|---|---|---|",
            *(
                f"| {q}% | {storm['measured'][f'{q}pct_s']} | {simulated.get(f'{q}pct_s', '-')} | "
                f"{devices.get(f'{q}pct_s', '-')} |"
                for q in (50, 90, 99, 100)
            ),
            "",
        ]
    lines += [
        "## Azure's documented DPS throttles",
        "",
        f"Source: {SOURCE}",
        "",
        "| Rate | Per-unit value |",
        "|---|---|",
        "| Operations | 1,000/min/service |",
        "| Device registrations | 1,000/min/service |",
        "| Device polling operation | 5/10 sec/device |",
        "",
        f"This run's DPS quota: {summary.get('dps_quota') or 'none (DPS measured at its own capacity)'}.",
        "",
    ]
    for label, record in (("Provisioning", p), ("Connecting", c)):
        if not record:
            continue
        lines += [f"## {label} steps", "", "| target/s | achieved/s | failed/s | p99 ms |", "|---|---|---|---|"]
        for s in record["steps"]:
            p99 = s.get("auth_p99_us")
            lines.append(
                f"| {s['target_rate']:g} | {s.get('achieved_rate', 0):g} | {s.get('failed_rate', 0):g} | "
                f"{round(p99 / 1000, 1) if p99 else '-'} |"
            )
        lines.append("")
    return "\n".join(lines)


def dps_run_command(args) -> int:
    run = DpsRun(args)
    run.say(f"certstorm run {run.run_id} → {run.dir} (provisioning through DPS over {args.hubs} hub(s))")
    if args.dps_quota is not None:
        q = args.dps_quota
        run.summary["dps_quota"] = f"{q.label} = {q.rate:g} registrations/s ({q.rate / REGISTRATIONS_PER_UNIT:g} units)"
    code = 0
    try:
        run.start()
        a = args
        if a.storm_devices:
            run.say(f"storm through DPS: {min(a.storm_devices, a.dps_devices):,} devices provision and connect at once")
            run.summary["storm"] = run.storm("storm")
            run.say("re-provisioning storm: the same devices register again")
            run.summary["reprovisioning_storm"] = run.storm("reprovisioning-storm")
        first = min(a.storm_devices, a.dps_devices // 2)
        run.say("provisioning ramp (registrations through DPS, provision only)")
        run.summary["provisioning"] = run.ramp(
            "provisioning",
            # a registration waits for its poll (at least 0.1 s): slots for half a second of latency
            [*run.dps_args(), "--provision-only", "--latency-budget", "0.5"],
            a.dps_start_rate,
            a.dps_step_rate,
            first,
        )
        hub = next(iter(run.hubs.values()))
        run.say(f"connecting ramp (devices connecting to {hub.mqtts_url})")
        target = ["--host", hub.mqtts_url, "--tls-ca", hub.tls_ca]
        run.summary["connecting"] = run.ramp("connecting", target, a.connect_start_rate, a.connect_step_rate, 0)
        for key in ("storm", "reprovisioning_storm"):
            if run.summary.get(key):
                run.simulate(run.summary[key], run.summary["provisioning"]["knee_per_s"])
        run.summary["spread"] = run.hub_spread()
    except KeyboardInterrupt:
        code = 130
    except (RuntimeError, OSError) as exc:
        print(f"certstorm run: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        run.stop()
    run.summary.setdefault("spread", spread({}))
    run.summary["azure_dps_limits"] = {"source": SOURCE, "per_unit": AZURE_DPS_LIMITS}
    run.summary["registrations_per_unit_per_s"] = round(REGISTRATIONS_PER_UNIT, 3)
    (run.dir / "summary.json").write_text(json.dumps(run.summary, indent=2, allow_nan=False))
    text = report(run.summary)
    (run.dir / "report.md").write_text(text)
    latest = link_latest(Path(args.out), "latest-dps", run.run_id)
    print()
    print("\n".join(text.splitlines()[2:7]))
    print(f"report: {run.dir / 'report.md'}  (also {latest}/report.md)")
    return code
