"""The swarm's Locust event listeners: set-up at ``init``, the run's plan at ``test_start`` (registering
Company-X's CA first), the master/worker messages, and a stop by other means than the shape."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path

import gevent
from locust import events

from devicekit.backoff import preset
from devicekit.hubclient import HubClient, admin_token
from loadgen import _mqtt, _provision
from loadgen._finish import finish_local, finish_run, iso, keep_sent_stats
from loadgen._live import VERSION, hello, report_seconds
from loadgen._options import RUN_OPTIONS, add_arguments
from loadgen._shapes import build_shape
from loadgen._state import (
    FLEET_OPTIONS,
    MSG_DONE,
    MSG_FINISH,
    MSG_HELLO,
    MSG_PACE,
    MSG_PLAN,
    MSG_READY,
    MSG_REPORT,
    MSG_SCHEDULE,
    MSG_SECONDS,
    TRANSPORT_OPTIONS,
    Swarm,
    current,
    install,
)

__all__ = []  # listeners only: importing this module registers them

log = logging.getLogger("certstorm.swarm")

events.init_command_line_parser.add_listener(add_arguments)

# the options a run's summary records: what the run did, whatever the web UI or the master changed
_OPTION_KEYS = {
    *RUN_OPTIONS,
    *FLEET_OPTIONS,
    *TRANSPORT_OPTIONS,
    "host",
    "num_users",
    "spawn_rate",
    "run_time",
    "processes",
    "expect_workers",
    "tls_ca",
}


def _quit(environment, why: str) -> None:
    log.error(why)
    environment.process_exit_code = 2
    gevent.spawn_later(0.1, environment.runner.quit)


@events.init.add_listener
def _on_init(environment, **_kw):
    if environment.parsed_options is None:  # e.g. imported by a tool, not run by locust
        return
    sw = install(environment)
    runner = environment.runner
    # Register the message handlers first: a worker is already connected to the master while it opens or
    # derives its fleet, and the master may send the run's plan meanwhile.
    if sw.role == "worker":
        sw.sent_stats = keep_sent_stats(environment)
        runner.register_message(MSG_PLAN, lambda environment, msg, **kw: gevent.spawn(_start_worker, sw, msg.data))
        runner.register_message(MSG_PACE, lambda environment, msg, **kw: sw.set_pace(**msg.data))
        runner.register_message(MSG_SCHEDULE, lambda environment, msg, **kw: sw.schedule.update(msg.data))
        runner.register_message(MSG_FINISH, _on_finish_message, concurrent=True)
    elif sw.role == "master":
        runner.register_message(MSG_REPORT, _on_report)
        runner.register_message(MSG_DONE, lambda environment, msg, **kw: sw.done_workers.add(msg.data["index"]))
        runner.register_message(MSG_HELLO, lambda environment, msg, **kw: _on_hello(sw, msg.data))
        runner.register_message(MSG_READY, lambda environment, msg, **kw: sw.live.write(msg.data))
        runner.register_message(MSG_SECONDS, lambda environment, msg, **kw: sw.live.write(*msg.data))
        gevent.spawn(_watch_workers, sw)
    try:
        if sw.role != "worker":  # a worker opens the fleet of the master's plan
            sw.load_fleet()
            if _mqtt.is_mqtts(sw.target_url):
                _mqtt.configure(sw.target_url, sw.options)
            if _provision.enabled(sw.options):
                _provision.configure(sw.options)
    except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
        sw.failed_setup = str(exc)
        _quit(environment, f"swarm set-up failed: {exc}")
        return
    finally:
        sw.fleet_loaded.set()
    if sw.role == "worker":
        runner.send_message(MSG_HELLO, hello(sw.index))
    elif sw.role == "local":
        sw.live.write(hello(0))
    if sw.role != "master":
        gevent.spawn(report_seconds, lambda: sw.recorder, lambda: sw.index, _seconds_sink(sw))
    if sw.options.shape == "follow" and sw.role != "worker":
        if not sw.options.schedule_file:
            sw.failed_setup = "the follow shape needs --schedule-file"
            _quit(environment, sw.failed_setup)
            return
        gevent.spawn(sw.schedule.follow_file, sw.options.schedule_file, _schedule_sink(sw))
    gevent.spawn(_cpu_sampler)


def _seconds_sink(sw: Swarm):
    if sw.role == "worker":
        return lambda records: sw.runner.send_message(MSG_SECONDS, records)
    return lambda records: sw.live.write(*records)


def _schedule_sink(sw: Swarm):
    if sw.role == "master":
        return lambda entries: sw.runner.send_message(MSG_SCHEDULE, entries)
    return lambda entries: None  # a lone process applies the same schedule object


def _start_worker(sw: Swarm, plan: dict) -> None:
    sw.schedule.update(plan.get("schedule", []))
    sw.start_run(plan)
    if sw.failed_setup:
        sw.runner.send_message(
            MSG_READY, {"kind": "error", "worker": sw.index, "message": sw.failed_setup, "t": time.time()}
        )
        return
    _follow(sw)
    sw.runner.send_message(MSG_READY, _ready(sw))


def _ready(sw: Swarm) -> dict:
    return {"kind": "ready", "worker": sw.index, "devices": sw.partition.size, "t": time.time()}


def _follow(sw: Swarm) -> None:
    """The follow shape: this process applies the schedule's entries at their times."""
    if sw.options.shape == "follow":
        gevent.spawn(sw.schedule.apply, sw.set_pace, sw.stop_pacing)


def _on_hello(sw: Swarm, data: dict) -> None:
    sw.live.write(data)
    if data.get("version") != VERSION:
        message = (
            f"swarm worker {data.get('worker')} on {data.get('host')} runs certstorm {data.get('version')}, "
            f"this master {VERSION}: install the same version on every generator host"
        )
        sw.live.write({"kind": "error", "message": message, "t": time.time()})
        sw.failed_setup = message
        _quit(sw.env, message)


def _watch_workers(sw: Swarm) -> None:
    """The master names every worker it loses, in the live file."""
    from locust.runners import STATE_MISSING

    gone: set[str] = set()
    while True:
        gevent.sleep(1.0)
        for client in list(sw.runner.clients.values()):
            if client.state == STATE_MISSING and client.id not in gone:
                gone.add(client.id)
                worker = sw.runner.get_worker_index(client.id)
                sw.live.write({"kind": "missing", "worker": worker, "t": time.time()})
                log.warning("swarm worker %s (%s) went missing", worker, client.id)


def _cpu_sampler():
    while True:
        sw = current()
        if sw is not None and sw.recorder is not None and sw.recorder.cpu.window_start is not None and not sw.draining:
            sw.recorder.cpu.sample()
        gevent.sleep(1.0)


def _on_finish_message(environment, msg, **_kw):
    report = finish_local(current())
    if report is not None:
        environment.runner.send_message(MSG_REPORT, report)


def _on_report(environment, msg, **_kw):
    current().reports[int(msg.data["index"])] = msg.data


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    sw = current()
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
        _quit(environment, sw.failed_setup)
        return
    log.info("CA %s on %s: %s in %.3f s", (ca["id"] or "-")[:16], sw.hub_url, ca["action"], ca["seconds"])
    sw.shape = build_shape(o, schedule=sw.schedule, clock=time.time)
    if sw.role == "master":
        runner = environment.runner
        clients = list(runner.clients.ready) + list(runner.clients.running) + list(runner.clients.spawning)
        sw.expected_workers = {runner.get_worker_index(c.id) for c in clients}
        stride = max(runner.worker_index_max, 1)
    else:
        sw.expected_workers = {0}
        stride = 1
    now = time.time()
    run_id = _dt.datetime.fromtimestamp(now, _dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{o.shape}"
    plan = {
        "run_id": run_id,
        "t0": now,
        "stride": stride,
        "limit": sw.device_limit(),
        "processes": max(1, len(sw.expected_workers)),
        "results_dir": str(Path(o.results_dir).resolve()),
        # the web UI may have changed these since start-up; workers take the master's
        "options": {k: getattr(o, k) for k in RUN_OPTIONS},
        "schedule": sw.schedule.entries,
        **sw.plan_for_workers(),
    }
    sw.meta = {
        "run": {
            "run_id": run_id,
            "t0": now,
            "started_at": iso(now),
            "role": sw.role,
            "stride": stride,
            "workers": sorted(sw.expected_workers),
        },
        "hub": {"url": sw.hub_url, "target": sw.target_url, "ca": ca},
        "hub_memory_before": memory_before,
        "fleet": {
            "path": str(sw.fleet.path),
            "count": sw.fleet.count,
            "used": plan["limit"],
            "alg": sw.fleet.alg,
            "depth": sw.fleet.depth,
            "derived": not o.fleet,
        },
        "shape": dict(sw.shape.describe(), name=o.shape),
        "phases": sw.shape.phases(),
        "backoff": {"preset": o.backoff, "description": preset(o.backoff).description}
        if o.shape in ("storm", "churn")
        else None,
        "options": {k: v for k, v in sorted(vars(o).items()) if k in _OPTION_KEYS},
    }
    if sw.role == "master":
        sw.plan = plan
        environment.runner.send_message(MSG_PLAN, plan)
    else:
        sw.start_run(plan)
        _follow(sw)
        sw.live.write(_ready(sw))


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw):
    """Runs stopped some other way than by the shape (Ctrl-C, the web UI's stop button)."""
    sw = current()
    if sw is None or sw.plan is None or sw.failed_setup:
        return
    if sw.role == "worker":
        report = finish_local(sw)
        if report is not None:
            environment.runner.send_message(MSG_REPORT, report)
    else:
        finish_run(sw, wait=5.0)
