"""The swarm's ``mqtts`` transport: with ``--host mqtts://host:8883`` every device connection is a TCP
connect, a mutual-TLS handshake with the device's own certificate, chain and key, and an MQTT CONNECT
answered by CONNACK (:mod:`devicekit.mqtts`), against the hub's TLS listener or any broker.

:class:`MqttsAuthenticator` has the HTTP authenticator's interface (``authenticate(conn, index, ...)``
returning an :class:`~loadgen._outcome.Outcome`), so every shape drives it unchanged. Locust gets
``MQTTS tcp connect``, ``MQTTS tls handshake``, ``MQTTS connack`` and ``AUTH authentication``; the swarm's
µs histograms ``tcp_connect``, ``tls_handshake`` and ``connack`` keep the sub-millisecond phases. Its
options (:func:`add_arguments`: ``--resume``, ``--hold``, ``--source-addresses``, ...) are described in
docs/swarm.md.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import time
from urllib.parse import urlsplit

from devicekit.mqtts import TLS_VERSIONS, MqttsClient, MqttsFailure, MqttsTarget
from hubsim.argtypes import integer, number
from loadgen._outcome import Outcome
from loadgen._recorder import Recorder

SCHEME = "mqtts"
_PHASES = (
    ("tcp", "tcp_connect", "tcp connect"),
    ("tls", "tls_handshake", "tls handshake"),
    ("connack", "connack", "connack"),
)
# failure code -> the status the backoff presets understand (429 throttled, 0 connection error)
_THROTTLED, _REFUSED = "connack_3", 401


def is_mqtts(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme == SCHEME


def add_arguments(add) -> None:
    """The transport's options (``add`` is the swarm's argument-group adder)."""
    add(
        "--tls-ca",
        default=None,
        metavar="FILE",
        help="mqtts: the server's CA certificate (PEM), e.g. the path the hub prints (default: do not verify "
        "the server)",
    )
    add("--tls-server-name", default=None, metavar="NAME", help="mqtts: SNI name (default: the --host name)")
    add("--tls-version", choices=sorted(TLS_VERSIONS), default="1.3", help="mqtts: TLS version (default 1.3)")
    add(
        "--mqtt-username",
        default=None,
        metavar="TEMPLATE",
        help="mqtts: CONNECT username, with {device_id} and {hub} (the host), e.g. Azure IoT Hub's "
        "'{hub}/{device_id}/?api-version=2021-04-12' (default: none)",
    )
    add(
        "--mqtt-keepalive",
        type=integer(0, 65535),
        default=60,
        metavar="S",
        help="mqtts: MQTT keepalive seconds (default 60)",
    )
    add("--resume", action="store_true", help="mqtts: reconnects offer the device's previous TLS session")
    add(
        "--hold",
        type=number(0),
        default=0.0,
        metavar="SECONDS",
        help="mqtts: keep each admitted device connected this long, with PINGREQ keepalive (default 0); with "
        "--passes the run then goes on until -t, holding what the passes admitted",
    )
    add(
        "--source-addresses",
        type=integer(1, 254),
        default=1,
        metavar="N",
        help="mqtts: spread connections over 127.0.0.1..127.0.0.N (loopback targets; default 1)",
    )


def source_addresses(host: str, count: int) -> list[str | None]:
    if not 1 <= count <= 254:
        raise ValueError("--source-addresses must be 1..254")
    if count == 1:
        return [None]
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        address = None
    if address is None or not address.is_loopback:
        raise ValueError("--source-addresses above 1 needs a loopback target (127.0.0.0/8)")
    return [f"127.0.0.{i}" for i in range(1, count + 1)]


def configure(url: str, options) -> tuple[MqttsTarget, list[str | None]]:
    """The target and source addresses the options describe; ValueError naming the bad option."""
    if options.hold < 0:
        raise ValueError("--hold must be at least 0 seconds")
    if not 0 <= options.mqtt_keepalive <= 65535:
        raise ValueError("--mqtt-keepalive must be 0..65535 seconds")
    if options.tls_ca and not os.path.isfile(options.tls_ca):
        raise ValueError(f"--tls-ca: no such file {options.tls_ca!r}")
    target = MqttsTarget.from_url(
        url,
        ca_file=options.tls_ca,
        server_name=options.tls_server_name,
        tls_version=options.tls_version,
        username=options.mqtt_username,
        keepalive=options.mqtt_keepalive,
        timeout=options.request_timeout,
    )
    if target.username is not None:
        try:
            target.username_for("device")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"--mqtt-username: only {{device_id}} and {{hub}} may be used ({exc!r})") from None
    return target, source_addresses(target.host, options.source_addresses)


class MqttsAuthenticator:
    """Connects devices over MQTT with mutual TLS for one process (shared by all its slots)."""

    transport = SCHEME

    def __init__(self, url: str, options, fleet, recorder: Recorder, fire):
        target, sources = configure(url, options)
        self.client = MqttsClient(target)
        self.fleet = fleet
        self.rec = recorder
        self.fire = fire
        self.resume = options.resume
        self.hold = options.hold
        self.sessions: dict[int, object] = {}
        self._sources = itertools.cycle(sources)
        self.device = None  # --device-profile/--network: the waits of loadgen._device.Waits, or None

    def connection(self):
        """A slot's own connection state: none (each device opens its own TCP connection)."""
        return None

    def authenticate(
        self, conn, index: int, pass_number: int = 0, *, intended: float | None = None, phase: int | None = None
    ) -> Outcome:
        rec, fire = self.rec, self.fire
        identity = self.fleet.identity(index)
        session = self.sessions.get(index) if self.resume else None
        if session is not None:
            rec.counts["resumed_offers"] += 1
        t0 = time.perf_counter()
        try:
            connection = self.client.connect(
                identity.device_id,
                identity.chain_der(),
                identity.private_key,
                session=session,
                source=next(self._sources),
                pause=None if self.device is None else self.device.pauser(index),
            )
        except MqttsFailure as exc:
            return self._failed(exc, time.perf_counter() - t0)
        total = time.perf_counter() - t0
        timings = connection.timings
        for attribute, histogram, name in _PHASES:
            seconds = getattr(timings, attribute)
            rec.hist[histogram].record(seconds * 1e6)
            fire(
                request_type="MQTTS",
                name=name,
                response_time=seconds * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )
        rec.admission(index, pass_number, total, intended=intended, phase=phase)
        if self.resume:
            self.sessions[index] = connection.session()
        if self.hold > 0:
            import gevent

            rec.counts["held"] += 1
            gevent.spawn(self._hold, connection)
        else:
            connection.close()
        return Outcome(True)

    def _hold(self, connection) -> None:
        """Keep an admitted device connected for ``--hold`` seconds with PINGREQ every keepalive."""
        import gevent

        keepalive = self.client.target.keepalive or self.hold
        end = time.monotonic() + self.hold
        try:
            while (left := end - time.monotonic()) > 0:
                gevent.sleep(min(keepalive, left))
                if end - time.monotonic() > 0:
                    t0 = time.perf_counter()
                    connection.ping()
                    self.fire(
                        request_type="MQTTS",
                        name="ping",
                        response_time=(time.perf_counter() - t0) * 1000.0,
                        response_length=0,
                        exception=None,
                        context={},
                    )
        except MqttsFailure as exc:
            self.rec.counts["hold_dropped"] += 1
            self.rec.failures[f"hold:{exc.code}"] += 1
        finally:
            connection.close()

    def _failed(self, exc: MqttsFailure, elapsed: float) -> Outcome:
        rec = self.rec
        name = {a: n for a, _, n in _PHASES}.get(exc.step, exc.step)
        self.fire(
            request_type="MQTTS",
            name=name,
            response_time=elapsed * 1000.0,
            response_length=0,
            exception=exc.code,
            context={},
        )
        rec.counts["failed"] += 1
        rec.failures[f"{exc.step}:{exc.code}"] += 1
        rec.second(time.time())[2] += 1
        refused = exc.code.startswith("connack_") or exc.code == "tls_handshake_failed"
        status = 429 if exc.code == _THROTTLED else _REFUSED if refused else 0
        return Outcome(False, exc.code, exc.step, status, retriable=status != _REFUSED)


__all__ = ["SCHEME", "MqttsAuthenticator", "add_arguments", "configure", "is_mqtts", "source_addresses"]
