"""The swarm's provisioning step: with ``--dps mqtts://host:8883 --id-scope S`` every device first
provisions through DPS over MQTT with mutual TLS (register, poll until assigned: :mod:`devicekit.dps`),
then connects to the hub DPS assigned (MQTT with mutual TLS, CONNACK), unless ``--provision-only``.

:class:`ProvisionAuthenticator` has the other transports' interface, so every shape drives it: a storm
of devices coming online through DPS, or -- run again over devices already assigned -- a re-provisioning
storm (``substatus`` ``unchanged`` or ``reassigned``). Locust gets ``DPS register`` and ``MQTTS hub
connack``; the µs histograms ``dps_register`` and ``hub_connect`` keep the phases; the counts
``dps_hub:<name>`` and ``dps_substatus:<s>`` say where devices went (the summary's ``provisioning``).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from devicekit.dps import DpsRefused, DpsTarget, provision
from devicekit.mqtts import DEFAULT_PORT, MqttsClient, MqttsFailure, MqttsTarget
from hubsim.argtypes import number
from loadgen._histo import Histogram
from loadgen._outcome import Outcome
from loadgen._recorder import Recorder

HISTOGRAMS = ("dps_register", "hub_connect")
RETRIABLE = frozenset({"throttled", "hub_unavailable", "dps_gave_up", "internal_error"})


def add_arguments(add) -> None:
    """The provisioning step's options (``add`` is the swarm's argument-group adder)."""
    add(
        "--dps",
        default=None,
        metavar="URL",
        help="provision every device through DPS first (mqtts://host:8883), then connect it to its assigned hub",
    )
    add("--id-scope", default=None, metavar="SCOPE", help="--dps: the id scope DPS printed")
    add("--dps-ca", default=None, metavar="FILE", help="--dps: DPS's CA certificate (default: do not verify DPS)")
    add(
        "--dps-hub",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="--dps: where a device assigned to hub NAME connects, e.g. hub-1=mqtts://127.0.0.1:8883 "
        "(default: mqtts://NAME:8883); repeat per hub",
    )
    add(
        "--dps-hub-ca",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="--dps: hub NAME's CA certificate (default: do not verify that hub); repeat per hub",
    )
    add("--provision-only", action="store_true", help="--dps: provision only, do not connect to the hub")
    add(
        "--dps-poll-wait",
        type=number(0),
        default=0.1,
        metavar="S",
        help="--dps: wait at least S seconds before the first poll, doubled at each further poll, even when DPS "
        "answers a smaller retry-after (default 0.1)",
    )


def enabled(options) -> bool:
    return bool(getattr(options, "dps", None))


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def configure(options) -> tuple[DpsTarget, dict[str, MqttsTarget]]:
    """DPS's target and the hubs' (by name); ValueError naming the bad option."""
    parts = urlsplit(options.dps)
    if parts.scheme != "mqtts" or not parts.hostname:
        raise ValueError(f"--dps must look like mqtts://host:8883, got {options.dps!r}")
    if not options.id_scope:
        raise ValueError("--dps needs --id-scope (DPS prints it when it starts)")
    version = getattr(options, "tls_version", "1.2")
    timeout = getattr(options, "request_timeout", 30.0)
    dps = DpsTarget(parts.hostname, parts.port or DEFAULT_PORT, options.id_scope, options.dps_ca, version, timeout)
    cas = _pairs(options.dps_hub_ca, "--dps-hub-ca")
    hubs = {}
    for name, url in _pairs(options.dps_hub, "--dps-hub").items():
        hubs[name] = MqttsTarget.from_url(url, ca_file=cas.get(name), tls_version=version, timeout=timeout)
    for name in set(cas) - set(hubs):
        hubs[name] = MqttsTarget(name, DEFAULT_PORT, cas[name], tls_version=version, timeout=timeout)
    return dps, hubs


class ProvisionAuthenticator:
    """Provisions devices through DPS and connects them to their hubs, for one process."""

    transport = "mqtts"  # each device opens its own connections: the slots hold none

    def __init__(self, options, fleet, recorder: Recorder, fire):
        self.target, self.hub_targets = configure(options)
        self.version = getattr(options, "tls_version", "1.2")
        self.timeout = getattr(options, "request_timeout", 30.0)
        self.client = MqttsClient(self.target.mqtts())
        self.hubs: dict[str, MqttsClient] = {}
        self.fleet = fleet
        self.rec = recorder
        self.fire = fire
        self.connect = not options.provision_only
        self.poll_wait = options.dps_poll_wait
        for name in HISTOGRAMS:
            recorder.hist.setdefault(name, Histogram())

    def connection(self):
        return None

    def _hub(self, name: str) -> MqttsClient:
        client = self.hubs.get(name)
        if client is None:
            target = self.hub_targets.get(name) or MqttsTarget(
                name, DEFAULT_PORT, tls_version=self.version, timeout=self.timeout
            )
            client = self.hubs[name] = MqttsClient(target)
        return client

    def authenticate(
        self, conn, index: int, pass_number: int = 0, *, intended: float | None = None, phase: int | None = None
    ) -> Outcome:
        rec = self.rec
        identity = self.fleet.identity(index)
        chain, key = identity.chain_der(), identity.private_key
        t0 = time.perf_counter()
        try:
            assignment = provision(
                self.target, identity.device_id, chain, key, client=self.client, min_wait=self.poll_wait
            )
        except DpsRefused as exc:
            return self._failed("dps", exc.code, exc.status, t0, "register")
        except MqttsFailure as exc:
            return self._failed(f"dps_{exc.step}", exc.code, 401 if exc.code.startswith("connack_") else 0, t0)
        t1 = time.perf_counter()
        rec.hist["dps_register"].record((t1 - t0) * 1e6)
        self._fire("DPS", "register", t1 - t0)
        rec.counts[f"dps_hub:{assignment.hub}"] += 1
        rec.counts[f"dps_substatus:{assignment.substatus}"] += 1
        rec.counts["dps_polls"] += assignment.polls
        if self.connect:
            try:
                self._hub(assignment.hub).connect(identity.device_id, chain, key).close()
            except MqttsFailure as exc:
                return self._failed(f"hub_{exc.step}", exc.code, 429 if exc.code == "connack_3" else 0, t1, "connack")
            t2 = time.perf_counter()
            rec.hist["hub_connect"].record((t2 - t1) * 1e6)
            self._fire("MQTTS", "hub connack", t2 - t1)
        rec.admission(index, pass_number, time.perf_counter() - t0, intended=intended, phase=phase)
        return Outcome(True)

    def _fire(self, kind: str, name: str, seconds: float, exception=None) -> None:
        self.fire(
            request_type=kind,
            name=name,
            response_time=seconds * 1000.0,
            response_length=0,
            exception=exception,
            context={},
        )

    def _failed(self, step: str, code: str, status: int, since: float, name: str = "connect") -> Outcome:
        rec = self.rec
        self._fire("DPS" if step.startswith("dps") else "MQTTS", name, time.perf_counter() - since, code)
        rec.counts["failed"] += 1
        rec.failures[f"{step}:{code}"] += 1
        rec.second(time.time())[2] += 1
        retriable = code in RETRIABLE or status in (0, 429) or status >= 500
        return Outcome(False, code, step, status, retriable=retriable)


__all__ = ["HISTOGRAMS", "ProvisionAuthenticator", "add_arguments", "configure", "enabled"]
