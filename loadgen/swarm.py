"""The device swarm: ``locust -f loadgen`` (this is the only locustfile under loadgen/).

A Locust user here is a *connection slot*: one keep-alive connection to the hub that works through many
devices in turn -- challenge request with the device's chain, signature with the device's own key, proof
request. Identities come from a fleet (``--fleet DIR``) or are derived at start-up (``--devices N``);
worker ``w`` of ``W`` uses devices ``w, w+W, ...`` so that within one pass no device is used twice
anywhere. The master (or the single process) registers Company-X's CA and proves possession through the
hub's HTTP API once per run, before any slot starts.

The load shape is chosen with ``--shape`` and this module exposes exactly one ``LoadTestShape``, a
dispatcher, because Locust silently takes the first shape class it finds:

* ``closed`` (default) -- Locust's own model: ``-u`` slots authenticate back to back, ``-r``, ``-t``;
* ``steady`` -- ``--rate`` authentications/s, each slot on a Poisson arrival schedule; latency is also
  measured from the intended start (coordinated omission), intended and achieved rates are recorded;
* ``step`` -- ``--rate``, then ``+--step-rate`` every ``--step-seconds``, ``--steps`` times;
* ``storm`` -- ``--storm-devices`` devices all due at once, retrying on 429/5xx/connection errors with
  ``--backoff``; records the admission curve;
* ``churn`` -- ``--churn-devices`` devices connect, stay ~``--churn-stay`` s, leave, come back after
  ~``--churn-away`` s.

Results (``--results-dir``, one sub-directory per run): see ``loadgen/_report.py``.

Examples::

    locust -f loadgen --headless --host http://127.0.0.1:8080 --devices 20000 -u 50 -t 30
    locust -f loadgen --headless --host http://127.0.0.1:8080 --fleet fleets/1m --shape steady --rate 1000 -t 60
    locust -f loadgen --headless --host http://127.0.0.1:8080 --devices 5000 --shape storm --backoff aws-crt
    locust -f loadgen --processes 2 --headless --host http://127.0.0.1:8080 --fleet fleets/1m --passes 1
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import random
import time
from pathlib import Path

import gevent
from gevent.event import Event
from locust import LoadTestShape, User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadgen import _shapes
from devicekit.backoff import preset
from loadgen._http import Authenticator
from loadgen._queue import DeviceQueue
from loadgen._recorder import Recorder
from devicekit.fleet import Fleet
from loadgen import _mqtt
from devicekit.hubclient import HubClient, admin_token
from devicekit.fleet import derive_fleet
from loadgen._partition import Partition
from loadgen._options import RUN_OPTIONS, add_arguments
from loadgen._report import merge_reports, write_results, write_worker
from devicekit.httpclient import Connection

log = logging.getLogger("certstorm.swarm")

MSG_PLAN, MSG_PACE, MSG_FINISH = "certstorm-plan", "certstorm-pace", "certstorm-finish"
MSG_REPORT, MSG_DONE = "certstorm-report", "certstorm-done"


# --- command line -----------------------------------------------------------------------------------------
events.init_command_line_parser.add_listener(add_arguments)


# --- per-process state ------------------------------------------------------------------------------------
class Swarm:
    """Everything one Locust process knows about the run."""

    def __init__(self, environment):
        self.env = environment
        self.options = environment.parsed_options
        self.runner = environment.runner
        self.role = ("master" if isinstance(self.runner, MasterRunner)
                     else "worker" if isinstance(self.runner, WorkerRunner) else "local")
        self.fleet: Fleet | None = None
        self.limit = 0
        self.ready = Event()
        self.fleet_loaded = Event()
        self.plan: dict | None = None
        self.partition: Partition | None = None
        self.recorder: Recorder | None = None
        self.auth: Authenticator | None = None
        self.shape: _shapes.Shape | None = None
        self.rate: float | None = None
        self.total_users = 1
        self.phase = 0
        self.k = 0
        self.queue: DeviceQueue | None = None
        self.backoff = preset(self.options.backoff)
        self.finishing = False
        self.finished = False
        self.report_sent = False
        self.done_sent = False
        self.done = False
        self.in_flight = 0
        self.reports: dict[int, dict] = {}
        self.done_workers: set[int] = set()
        self.expected_workers: set[int] = set()
        self.meta: dict = {}
        self.failed_setup: str | None = None
        self.run_active = False

    # -- set-up ------------------------------------------------------------------------------------------
    @property
    def target_url(self) -> str:
        return self.env.host or self.options.host or ""

    @property
    def hub_url(self) -> str | None:
        """The hub's HTTP URL. With an ``mqtts://`` --host it serves administration only and is --hub-url,
        or None (a broker that trusts the fleet's CA by its own configuration)."""
        if _mqtt.is_mqtts(self.target_url):
            return self.options.hub_url.rstrip("/") if self.options.hub_url else None
        url = self.options.hub_url or self.env.host or self.options.host
        if not url:
            raise ValueError("no hub URL: give --host or --hub-url")
        return url.rstrip("/")

    def load_fleet(self) -> None:
        o = self.options
        if o.fleet:
            self.fleet = Fleet.open(o.fleet)
            self.limit = min(o.devices, self.fleet.count) if o.devices else self.fleet.count
        else:
            if o.devices is None:
                o.devices = 1000
            if o.devices < 1:
                raise ValueError("--devices must be at least 1")
            token = str(os.getppid() if self.role == "worker" else os.getpid())
            self.fleet = derive_fleet(o.devices, alg=o.alg, depth=o.depth, seed=o.seed, cache_dir=o.fleet_cache,
                                      run_token=token, log=log.info, san=o.san)
            self.limit = self.fleet.count
        o.storm_devices = min(o.storm_devices or self.limit, self.limit)
        o.churn_devices = min(o.churn_devices or self.limit, self.limit)

    def device_limit(self) -> int:
        shape = self.options.shape
        if shape == "storm":
            return self.options.storm_devices
        if shape == "churn":
            return self.options.churn_devices
        return self.limit

    def start_run(self, plan: dict) -> None:
        """Apply the master's plan (every role); called before any slot authenticates."""
        self.fleet_loaded.wait()
        if self.failed_setup:
            return
        self.plan = plan
        for key, value in plan["options"].items():
            setattr(self.options, key, value)
        self.backoff = preset(self.options.backoff)
        index = 0 if self.role == "local" else self.runner.worker_index
        self.partition = Partition(index, plan["stride"], plan["limit"])
        self.recorder = Recorder(self.fleet.count, plan["t0"])
        fire = self.env.events.request.fire
        if _mqtt.is_mqtts(self.target_url):
            self.auth = _mqtt.MqttsAuthenticator(self.target_url, self.options, self.fleet, self.recorder, fire)
        else:
            self.auth = Authenticator(self.fleet, self.recorder, fire)
        self.k = 0
        self.finishing = self.finished = self.report_sent = self.done_sent = self.done = False
        self.in_flight = 0
        o = self.options
        if o.shape == "storm":
            self.queue = DeviceQueue(self.partition.devices(), plan["t0"], o.storm_spread)
        elif o.shape == "churn":
            self.queue = DeviceQueue(self.partition.devices(), plan["t0"], o.churn_away)
        else:
            self.queue = None
        if self.partition.size == 0:
            self.mark_done()
        self.ready.set()
        log.info("swarm %s: %r, shape %s, run %s", self.role, self.partition, o.shape, plan["run_id"])

    # -- pacing ------------------------------------------------------------------------------------------
    def set_pace(self, rate, users, phase) -> None:
        self.rate, self.total_users, self.phase = rate, max(1, users), phase

    def interval(self) -> float | None:
        return self.total_users / self.rate if self.rate else None

    def next_device(self):
        """(device index, pass number) for the closed and paced shapes, or None when the passes are used up."""
        p = self.partition
        if p.size == 0:
            return None
        k = self.k
        if self.options.passes and k >= self.options.passes * p.size:
            self.mark_done()
            return None
        self.k = k + 1
        index, pass_number = p.device(k)
        first = self.options.first_device
        return ((index + first) % p.limit if first else index), pass_number

    def mark_done(self) -> None:
        if self.done:
            return
        self.done = True
        if self.role == "worker" and not self.done_sent:
            self.done_sent = True
            self.runner.send_message(MSG_DONE, {"index": self.runner.worker_index})

    def all_done(self) -> bool:
        if self.role == "master":
            return bool(self.expected_workers) and self.expected_workers <= self.done_workers
        return self.done

    # -- finishing ---------------------------------------------------------------------------------------
    def finish_local(self) -> dict | None:
        """Stop starting new authentications, let the ones in flight end, and build this process's report."""
        if self.recorder is None or self.report_sent:
            return None
        self.finishing = True
        deadline = time.monotonic() + 5.0
        while self.in_flight > 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self.recorder.cpu.stop()
        extra = {"role": self.role, "index": self.partition.index, "devices_in_share": self.partition.size,
                 "pid": os.getpid(), "in_flight_at_end": self.in_flight, "locust": _locust_stats(self.env)}
        if self.queue is not None:
            extra["queue"] = {"devices": self.queue.total, "admitted": self.queue.admitted,
                              "gave_up": self.queue.gave_up, "still_waiting": len(self.queue)}
        report = self.recorder.to_dict(extra)
        self.report_sent = True
        try:
            write_worker(self.results_path(), self.partition.index, report)
        except OSError as exc:
            log.warning("could not write this worker's report: %s", exc)
        return report

    def results_path(self) -> Path:
        return Path(self.plan["results_dir"]) / self.plan["run_id"]

    def finish_run(self, wait: float | None = None) -> None:
        """Master or local: collect every report and write the summary (once per run)."""
        if self.finished or self.plan is None:
            return
        if self.role == "local":
            report = self.finish_local()
            if report is not None:
                self.reports[0] = report
        else:
            self.runner.send_message(MSG_FINISH, {"run_id": self.plan["run_id"]})
            deadline = time.monotonic() + (self.options.finish_timeout if wait is None else wait)
            while time.monotonic() < deadline and not self.expected_workers <= set(self.reports):
                gevent.sleep(0.1)
        self.finished = True
        self.run_active = False
        self.write_summary()

    def write_summary(self) -> None:
        meta = dict(self.meta)
        meta["run"] = dict(meta.get("run", {}), ended_at=_iso(time.time()),
                           duration_s=round(time.time() - self.plan["t0"], 3))
        missing = sorted(self.expected_workers - set(self.reports)) if self.role == "master" else []
        meta["reports"] = {"received": sorted(self.reports), "missing": missing, "complete": not missing}
        try:
            meta["hub_memory_after"] = HubClient(self.hub_url).memory() if self.hub_url else None
        except Exception:
            meta["hub_memory_after"] = None
        meta["hub_cpu"] = _hub_cpu(meta.get("hub_memory_before"), meta.get("hub_memory_after"))
        # Locust's own entries, summed over the processes (a master's stats lag its workers' by up to 3 s)
        meta["locust"] = _sum_locust(r.get("locust", {}) for r in self.reports.values())
        if not self.reports:
            log.error("no worker reports arrived; no summary written")
            return
        summary, hists = merge_reports(self.reports, meta)
        path = write_results(self.results_path(), summary, hists)
        a = summary["authentications"]
        log.info("swarm summary: %d admitted, %d failed attempts, %d distinct devices, %s -> %s",
                 a["admitted"], a["failed_attempts"], summary["devices"]["distinct_admitted"],
                 summary["generator_verdict"], path)
        log.info("swarm latency, µs (the swarm's own histograms; Locust counts HTTP requests only):\n%s",
                 _latency_table(summary["latency_us"]))
        if summary["generator_limited"]:
            log.warning(summary["generator_verdict"])


def _latency_table(latency: dict) -> str:
    rows = [f"{'':<20}{'count':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}"]
    for name, h in latency.items():
        if h.get("count"):
            rows.append(f"{name:<20}{h['count']:>10}" + "".join(f"{h[f'p{q}_us']:>10,.0f}"
                                                               for q in ("50", "90", "99", "99.9")))
    return "\n".join(rows)


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


def _locust_stats(env) -> dict:
    out = {}
    for (name, method), e in env.runner.stats.entries.items():
        out[f"{method} {name}"] = {"requests": e.num_requests, "failures": e.num_failures,
                                   "avg_ms": round(e.avg_response_time, 3),
                                   "p50_ms": e.get_response_time_percentile(0.5),
                                   "p99_ms": e.get_response_time_percentile(0.99)}
    return out


def _hub_cpu(before: dict | None, after: dict | None) -> dict | None:
    """The hub workers' CPU use during the run (same-machine hubs only): is the hub the bottleneck?"""
    if not before or not after:
        return None
    wall = after["at"] - before["at"]
    per = {pid: round((after["worker_cpu_s"][pid] - cpu) / wall, 4)
           for pid, cpu in before["worker_cpu_s"].items() if pid in after["worker_cpu_s"]}
    busiest = max(per.values(), default=0.0)
    return {"wall_s": round(wall, 3), "utilization_by_worker": per, "busiest": busiest,
            "saturated": busiest >= 0.85,
            "note": "includes CA registration and the ramp-up; compare with generator_cpu"}


def _sum_locust(per_process) -> dict:
    out: dict[str, dict] = {}
    for stats in per_process:
        for name, e in stats.items():
            acc = out.setdefault(name, {"requests": 0, "failures": 0, "max_p99_ms": 0})
            acc["requests"] += e["requests"]
            acc["failures"] += e["failures"]
            acc["max_p99_ms"] = max(acc["max_p99_ms"], e["p99_ms"] or 0)
    return out


SWARM: Swarm | None = None


# --- events -----------------------------------------------------------------------------------------------
@events.init.add_listener
def _on_init(environment, **_kw):
    global SWARM
    if environment.parsed_options is None:  # e.g. imported by a tool, not run by locust
        return
    sw = SWARM = Swarm(environment)
    runner = environment.runner
    # Register the message handlers first: a worker is already connected to the master while it opens or
    # derives its fleet, and the master may send the run's plan meanwhile.
    if sw.role == "worker":
        runner.register_message(MSG_PLAN, lambda environment, msg, **kw: gevent.spawn(sw.start_run, msg.data))
        runner.register_message(MSG_PACE, lambda environment, msg, **kw: sw.set_pace(**msg.data))
        runner.register_message(MSG_FINISH, _on_finish_message, concurrent=True)
    elif sw.role == "master":
        runner.register_message(MSG_REPORT, _on_report)
        runner.register_message(MSG_DONE, lambda environment, msg, **kw: sw.done_workers.add(msg.data["index"]))
    try:
        sw.load_fleet()
        if _mqtt.is_mqtts(sw.target_url):
            _mqtt.configure(sw.target_url, sw.options)
    except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
        sw.failed_setup = str(exc)
        log.error("swarm set-up failed: %s", exc)
        environment.process_exit_code = 2
        gevent.spawn_later(0.1, environment.runner.quit)
        return
    finally:
        sw.fleet_loaded.set()
    gevent.spawn(_cpu_sampler)


def _cpu_sampler():
    while True:
        sw = SWARM
        if sw is not None and sw.recorder is not None and sw.recorder.cpu.window_start is not None \
                and not sw.finishing:
            sw.recorder.cpu.sample()
        gevent.sleep(1.0)


def _on_finish_message(environment, msg, **_kw):
    sw = SWARM
    report = sw.finish_local()
    if report is not None:
        environment.runner.send_message(MSG_REPORT, report)


def _on_report(environment, msg, **_kw):
    SWARM.reports[int(msg.data["index"])] = msg.data


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    sw = SWARM
    if sw is None or sw.failed_setup:
        return
    if sw.role == "worker":
        return  # workers start from the master's plan message, which arrives before any spawn message
    o = sw.options
    sw.reports, sw.done_workers = {}, set()
    try:
        if sw.hub_url is None:  # a broker configured with the fleet's CA: nothing to register
            memory_before, ca = None, {"id": None, "action": "not registered (broker)", "seconds": 0.0}
        else:
            hub = HubClient(sw.hub_url, token=admin_token(o.admin_token_file))
            memory_before = hub.memory()
            ca = hub.ensure_ca(sw.fleet.custodian())
    except Exception as exc:
        sw.failed_setup = f"CA registration at {sw.hub_url} failed: {exc}"
        log.error(sw.failed_setup)
        environment.process_exit_code = 2
        gevent.spawn_later(0.1, environment.runner.quit)
        return
    log.info("CA %s on %s: %s in %.3f s", (ca["id"] or "-")[:16], sw.hub_url, ca["action"], ca["seconds"])
    sw.shape = _shapes.build_shape(o)
    if sw.role == "master":
        runner = environment.runner
        clients = list(runner.clients.ready) + list(runner.clients.running) + list(runner.clients.spawning)
        sw.expected_workers = {runner.get_worker_index(c.id) for c in clients}
        stride = max(runner.worker_index_max, 1)
    else:
        sw.expected_workers = {0}
        stride = 1
    now = time.time()
    run_id = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + f"-{o.shape}"
    plan = {"run_id": run_id, "t0": now, "stride": stride, "limit": sw.device_limit(),
            "results_dir": str(Path(o.results_dir).resolve()),
            # the web UI may have changed these since start-up; workers take the master's
            "options": {k: getattr(o, k) for k in RUN_OPTIONS}}
    sw.meta = {
        "run": {"run_id": run_id, "t0": now, "started_at": _iso(now), "role": sw.role, "stride": stride,
                "workers": sorted(sw.expected_workers)},
        "hub": {"url": sw.hub_url, "target": sw.target_url, "ca": ca},
        "hub_memory_before": memory_before,
        "fleet": {"path": str(sw.fleet.path), "count": sw.fleet.count, "used": plan["limit"],
                  "alg": sw.fleet.alg, "depth": sw.fleet.depth, "derived": not o.fleet},
        "shape": dict(sw.shape.describe(), name=o.shape),
        "phases": sw.shape.phases(),
        "backoff": {"preset": o.backoff, "description": preset(o.backoff).description}
        if o.shape in ("storm", "churn") else None,
        "options": {k: v for k, v in sorted(vars(o).items()) if k in _OPTION_KEYS},
    }
    if sw.role == "master":
        sw.plan, sw.finished = plan, False
        environment.runner.send_message(MSG_PLAN, plan)
    else:
        sw.start_run(plan)


_OPTION_KEYS = {"hub_url", "host", "fleet", "devices", "alg", "depth", "san", "seed", "shape", "rate", "step_rate",
                "step_seconds", "steps", "slots", "latency_budget", "arrivals", "storm_devices", "storm_spread",
                "backoff", "churn_devices", "churn_stay", "churn_away", "passes", "num_users", "spawn_rate",
                "run_time", "processes", "expect_workers", "request_timeout", "results_dir",
                "tls_ca", "tls_server_name", "tls_version", "mqtt_username", "mqtt_keepalive", "resume", "hold",
                "source_addresses"}


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    """Runs stopped some other way than by the shape (Ctrl-C, the web UI's stop button)."""
    sw = SWARM
    if sw is None or sw.plan is None or sw.failed_setup:
        return
    if sw.role == "worker":
        report = sw.finish_local()
        if report is not None:
            environment.runner.send_message(MSG_REPORT, report)
    else:
        sw.finish_run(wait=5.0)


# --- the one user class: a connection slot ----------------------------------------------------------------
class DeviceSlot(User):
    """One keep-alive connection to the hub, authenticating one device after another."""

    wait_time = constant(0)

    def on_start(self):
        sw = SWARM
        while not sw.ready.wait(timeout=1.0):
            if sw.failed_setup:
                self.stop(force=False)
                return
        self.conn = (sw.auth.connection() if getattr(sw.auth, "transport", "http") == _mqtt.SCHEME
                     else Connection(sw.hub_url, timeout=sw.options.request_timeout))
        self.rng = random.Random()
        sw.recorder.cpu.start()

    def on_stop(self):
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    @task
    def work(self):
        sw = SWARM
        shape = sw.options.shape
        if shape == "closed":
            self._closed(sw)
        elif shape in ("steady", "step"):
            self._paced(sw)
        else:
            self._queued(sw, churn=shape == "churn")
        while True:  # finished or out of devices: idle until Locust stops the slot
            gevent.sleep(60)

    def _closed(self, sw: Swarm):
        auth, conn = sw.auth, self.conn
        while not sw.finishing:
            nxt = sw.next_device()
            if nxt is None:
                return
            sw.in_flight += 1
            try:
                auth.authenticate(conn, nxt[0], nxt[1])
            finally:
                sw.in_flight -= 1

    def _paced(self, sw: Swarm):
        auth, conn, rng, rec = sw.auth, self.conn, self.rng, sw.recorder
        poisson = sw.options.arrivals == "poisson"
        interval = sw.interval()
        while interval is None and not sw.finishing:
            gevent.sleep(0.05)
            interval = sw.interval()
        next_t = time.time() + rng.random() * interval  # random phase: slots do not fire together
        while not sw.finishing:
            delay = next_t - time.time()
            if delay > 0:
                gevent.sleep(delay)
                if sw.finishing:
                    return
            nxt = sw.next_device()
            if nxt is None:
                return
            intended = next_t
            rec.second(intended)[0] += 1
            sw.in_flight += 1
            try:
                auth.authenticate(conn, nxt[0], nxt[1], intended=intended, phase=sw.phase)
            finally:
                sw.in_flight -= 1
            interval = sw.interval() or interval
            next_t += rng.expovariate(1.0 / interval) if poisson else interval

    def _queued(self, sw: Swarm, churn: bool):
        q, auth, conn, rec, backoff = sw.queue, sw.auth, self.conn, sw.recorder, sw.backoff
        stay, away = sw.options.churn_stay, sw.options.churn_away
        while not sw.finishing:
            now = time.time()
            item = q.pop_due(now)
            if item is None:
                if q.finished:
                    sw.mark_done()
                    return
                due = q.next_due()
                gevent.sleep(min(max((due - now) if due is not None else 0.05, 0.001), 0.05))
                continue
            _, _, index, retry, first_attempt, previous = item
            if first_attempt is None:
                first_attempt = now
            if retry:
                rec.counts["retries"] += 1
                rec.second(now)[3] += 1
            rec.bucket(now)[0] += 1
            reconnect = churn and bool(rec.admitted[index])
            sw.in_flight += 1
            try:
                out = auth.authenticate(conn, index, 1 if reconnect else 0)
            finally:
                sw.in_flight -= 1
            end = time.time()
            if out.ok:
                rec.bucket(end)[1] += 1
                if churn:
                    if reconnect:
                        rec.counts["reconnects"] += 1
                    online = q.exp(stay)
                    rec.online_delta[int(end)] += 1
                    rec.online_delta[int(end + online)] -= 1
                    q.push(end + online + q.exp(away), index, 0, None, 0.0)
                else:
                    q.admitted += 1
            else:
                rec.bucket(end)[2] += 1
                if out.retriable and not backoff.gives_up(first_attempt, end):
                    d = backoff.delay(retry + 1, now=end, throttled=out.status == 429,
                                      connection_error=out.status == 0, previous=previous, rng=self.rng)
                    q.push(end + d, index, retry + 1, first_attempt, d)
                else:
                    q.gave_up += 1
                    rec.counts["gave_up"] += 1
            q.settle()


# --- the one load shape: a dispatcher -----------------------------------------------------------------------
class SwarmShape(LoadTestShape):
    """Delegates to the schedule named by ``--shape`` (see ``loadgen/_shapes.py``)."""

    use_common_options = True  # -u/-r/-t are read by the closed shape and -t by the others

    def tick(self):
        sw = SWARM
        if sw is None or sw.failed_setup:
            return None
        if not sw.run_active:  # a new run (the web UI can start several): forget the last one's ending
            sw.run_active = True
            sw.done, sw.done_workers, sw.finished = False, set(), False
            sw.shape = _shapes.build_shape(sw.options)
        # with --hold, devices admitted in the passes stay connected until -t ends the run
        done = sw.all_done() and not getattr(sw.options, "hold", 0.0)
        plan = sw.shape.tick(self.get_run_time(), done)
        if plan is None:
            sw.finish_run()
            return None
        if (plan.rate, plan.users, plan.phase) != (sw.rate, sw.total_users, sw.phase):
            sw.set_pace(plan.rate, plan.users, plan.phase)
            if sw.role == "master":
                sw.runner.send_message(MSG_PACE, {"rate": plan.rate, "users": plan.users, "phase": plan.phase})
        return plan.users, plan.spawn_rate

