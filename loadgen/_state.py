"""What one Locust process of the swarm knows about the run: its role, its fleet and share of devices,
the plan the master handed out, the pace of the paced shapes, and how far the run has got.

A run goes through stages, in order: ``IDLE`` (nothing started, or the last run is over), ``RUNNING``,
``DRAINING`` (no new authentications; the ones in flight end), ``REPORTED`` (this process's report is
built) and ``FINISHED`` (the master or a single process wrote the summary). Running out of devices
(``done``) is separate: a storm whose devices are all admitted is done while still running.

A worker runs the fleet and transport of the master's plan, whatever its own command line says, so a
bare ``certstorm swarm --worker --master-host HOST`` on another machine joins a run as it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from enum import IntEnum

import gevent
from gevent.event import Event
from locust.runners import MasterRunner, WorkerRunner

from devicekit.backoff import preset
from devicekit.fleet import NO_TOKEN_KEYS_OVER_MQTTS, Fleet, derive_fleet
from devicekit.profiles import Profile
from loadgen import _mqtt, _provision
from loadgen._device import Waits, sample_in_flight
from loadgen._http import Authenticator
from loadgen._live import LiveFile
from loadgen._pacer import Pacer
from loadgen._partition import Partition
from loadgen._queue import DeviceQueue
from loadgen._recorder import Recorder
from loadgen._schedule import Schedule

__all__ = [
    "FLEET_OPTIONS",
    "MSG_DONE",
    "MSG_FINISH",
    "MSG_HELLO",
    "MSG_PACE",
    "MSG_PLAN",
    "MSG_READY",
    "MSG_REPORT",
    "MSG_SCHEDULE",
    "MSG_SECONDS",
    "TRANSPORT_OPTIONS",
    "Stage",
    "Swarm",
    "current",
    "install",
]

log = logging.getLogger("certstorm.swarm")

MSG_PLAN, MSG_PACE, MSG_FINISH = "certstorm-plan", "certstorm-pace", "certstorm-finish"
MSG_REPORT, MSG_DONE = "certstorm-report", "certstorm-done"
MSG_HELLO, MSG_READY, MSG_SECONDS = "certstorm-hello", "certstorm-ready", "certstorm-seconds"
MSG_SCHEDULE = "certstorm-schedule"
FLEET_OPTIONS = ("fleet", "devices", "alg", "depth", "san", "seed")
TRANSPORT_OPTIONS = (
    "hub_url",
    "tls_server_name",
    "tls_version",
    "mqtt_username",
    "mqtt_keepalive",
    "resume",
    "hold",
    "source_addresses",
    "request_timeout",
    "first_device",
    "device_profile",
    "network",
)


class Stage(IntEnum):
    IDLE = 0
    RUNNING = 1
    DRAINING = 2
    REPORTED = 3
    FINISHED = 4


class Swarm:
    """Everything one Locust process knows about the run."""

    def __init__(self, environment):
        self.env = environment
        self.options = environment.parsed_options
        self.runner = environment.runner
        if isinstance(self.runner, MasterRunner):
            self.role = "master"
        elif isinstance(self.runner, WorkerRunner):
            self.role = "worker"
        else:
            self.role = "local"
        self.fleet: Fleet | None = None
        self.limit = 0
        self.fleet_loaded = Event()  # set once the fleet is open (or failed to open)
        self.ready = Event()  # set once this process has taken the run's plan
        self.failed_setup: str | None = None
        self.sent_stats = None  # a worker's Locust stats already sent to the master (Locust empties its own)
        self.plan: dict | None = None
        self.meta: dict = {}
        self.partition: Partition | None = None
        self.recorder: Recorder | None = None
        self.auth = None
        self.shape = None
        self.queue: DeviceQueue | None = None
        self.backoff = preset(self.options.backoff)
        self.rate: float | None = None
        self.total_users = 1
        self.phase = 0
        self.pacer = Pacer(poisson=self.options.arrivals == "poisson")
        self.schedule = Schedule()  # the follow shape's entries
        self.live = LiveFile(None if self.role == "worker" else self.options.live_file)
        self.k = 0  # authentications this process has started (closed and paced shapes)
        self.in_flight = 0  # authentications under way in this process, sampled into the recorder
        self._in_flight_sampler = None
        self.profile: Profile | None = None
        self.stage = Stage.IDLE
        self.done = False  # out of devices
        self.stopped_at: float | None = None  # the follow shape's stop
        self.reports: dict[int, dict] = {}
        self.done_workers: set[int] = set()
        self.expected_workers: set[int] = set()

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

    @property
    def draining(self) -> bool:
        return self.stage >= Stage.DRAINING

    @property
    def index(self) -> int:
        return 0 if self.role == "local" else self.runner.worker_index

    def load_fleet(self) -> None:
        """Open the fleet the options name, or derive it."""
        o = self.options
        if o.fleet:
            self.fleet = Fleet.open(o.fleet)
            self.limit = min(o.devices, self.fleet.count) if o.devices else self.fleet.count
        else:
            if o.devices is None:
                o.devices = 1000
            token = str(os.getppid() if self.role == "worker" else os.getpid())
            self.fleet = derive_fleet(
                o.devices,
                alg=o.alg,
                depth=o.depth,
                seed=o.seed,
                cache_dir=o.fleet_cache,
                run_token=token,
                log=log.info,
                san=o.san,
            )
            self.limit = self.fleet.count
        self._check_keys_fit_transport()
        o.storm_devices = min(o.storm_devices or self.limit, self.limit)
        o.churn_devices = min(o.churn_devices or self.limit, self.limit)

    def _check_keys_fit_transport(self) -> None:
        over_mqtts = _mqtt.is_mqtts(self.target_url) or _provision.enabled(self.options)  # DPS speaks MQTT+TLS
        if over_mqtts and getattr(self.fleet, "meta", {}).get("keys") == "pkcs11":
            raise ValueError(f"--fleet: {NO_TOKEN_KEYS_OVER_MQTTS}")

    def device_limit(self) -> int:
        shape = self.options.shape
        if shape == "storm":
            return self.options.storm_devices
        if shape == "churn":
            return self.options.churn_devices
        return self.limit

    def plan_for_workers(self) -> dict:
        """What a worker takes from the master, beside the run options: the fleet, the transport, the
        server's CA certificate as text and the target."""
        o = self.options
        ca = None
        if getattr(o, "tls_ca", None):
            with open(o.tls_ca) as fh:
                ca = fh.read()
        return {
            "fleet": {key: getattr(o, key) for key in FLEET_OPTIONS},
            "transport": {key: getattr(o, key) for key in TRANSPORT_OPTIONS},
            "tls_ca_pem": ca,
            "host": self.target_url,
        }

    def _take_master_options(self, plan: dict) -> None:
        o = self.options
        fleet = plan["fleet"]
        if self.fleet is None or any(getattr(o, key) != fleet[key] for key in FLEET_OPTIONS):
            for key in FLEET_OPTIONS:
                setattr(o, key, fleet[key])
            self.load_fleet()
        for key, value in plan["transport"].items():
            setattr(o, key, value)
        if plan.get("tls_ca_pem"):
            fd, path = tempfile.mkstemp(prefix="certstorm-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as fh:
                fh.write(plan["tls_ca_pem"])
            o.tls_ca = path
        self.env.host = plan["host"]
        self._check_keys_fit_transport()
        if _mqtt.is_mqtts(self.target_url):
            _mqtt.configure(self.target_url, o)

    def start_run(self, plan: dict) -> None:
        """Apply the master's plan (every role); called before any slot authenticates."""
        self.fleet_loaded.wait()
        if self.role == "worker" and not self.failed_setup:
            try:
                self._take_master_options(plan)
            except (ValueError, OSError, RuntimeError, TimeoutError) as exc:
                self.failed_setup = f"this worker cannot run the master's plan: {exc}"
                log.error(self.failed_setup)
        if self.failed_setup:
            return
        self.plan = plan
        for key, value in plan["options"].items():
            setattr(self.options, key, value)
        self.pacer.set_share(1.0 / max(1, plan.get("processes", 1)))
        self.pacer.poisson = self.options.arrivals == "poisson"
        self.backoff = preset(self.options.backoff)
        self.partition = Partition(self.index, plan["stride"], plan["limit"])
        self.recorder = Recorder(self.fleet.count, plan["t0"])
        fire = self.env.events.request.fire
        if _provision.enabled(self.options):  # --dps: provision through DPS, then connect to the assigned hub
            self.auth = _provision.ProvisionAuthenticator(self.options, self.fleet, self.recorder, fire)
        elif _mqtt.is_mqtts(self.target_url):
            self.auth = _mqtt.MqttsAuthenticator(self.target_url, self.options, self.fleet, self.recorder, fire)
        else:
            self.auth = Authenticator(self.fleet, self.recorder, fire)
        self.profile = Profile.parse(self.options.device_profile, self.options.network)
        self.auth.device = Waits(self.profile, self.recorder) if self.profile.waits else None
        if self._in_flight_sampler is not None:
            self._in_flight_sampler.kill(block=False)
        self._in_flight_sampler = gevent.spawn(sample_in_flight, self)
        self.k = 0
        self.in_flight = 0
        self.stage, self.done, self.stopped_at = Stage.RUNNING, False, None
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
        """The swarm's target rate (None: the closed model), its slots and the step number; this process
        paces its share of the rate."""
        self.rate, self.total_users, self.phase = rate, max(1, users), phase
        self.pacer.pace(rate)

    def stop_pacing(self) -> None:
        """The schedule's stop: no authentication starts after this instant."""
        self.stopped_at = time.time()
        self.pacer.pace(0.0)

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
        """Out of devices; a worker tells the master, once."""
        if self.done:
            return
        self.done = True
        if self.role == "worker":
            self.runner.send_message(MSG_DONE, {"index": self.runner.worker_index})

    def all_done(self) -> bool:
        if self.role == "master":
            return bool(self.expected_workers) and self.expected_workers <= self.done_workers
        return self.done


_CURRENT: list[Swarm | None] = [None]


def install(environment) -> Swarm:
    """This process's swarm, made when Locust initialises it."""
    _CURRENT[0] = Swarm(environment)
    return _CURRENT[0]


def current() -> Swarm | None:
    """This process's swarm, or None where Locust did not initialise one (a tool importing the module)."""
    return _CURRENT[0]
