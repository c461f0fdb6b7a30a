"""What a hub holds for the attempts in flight, measured: its memory per TLS handshake left waiting for the
device (the state a slow signer keeps on the hub), and its gauges and resident memory second by second
during a storm."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import psutil
from OpenSSL import SSL
from prometheus_client.parser import text_string_to_metric_families

from certstorm.capacity.sampler import fetch_metrics
from hubsim.tlsbio import outgoing

__all__ = ["HubWatch", "handshake_memory", "hub_rss_kib", "parse_hold_metrics"]


def hub_rss_kib(pid: int) -> float | None:
    """Resident memory of the hub (supervisor and workers), KiB."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1024
    except psutil.Error:
        return None


def parse_hold_metrics(text: str) -> dict[str, float]:
    """What the hub holds, from its Prometheus text: challenges awaiting their proof, and MQTT-over-TLS
    connections in their handshake (up to CONNACK) or connected."""
    out = {"pending_challenges": 0.0, "handshakes": 0.0, "connected": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "certstorm_pending_challenges":
                out["pending_challenges"] += sample.value
            elif sample.name == "certstorm_mqtts_connections":
                key = "handshakes" if sample.labels.get("state") == "handshake" else "connected"
                out[key] += sample.value
    return out


def _stall(host: str, port: int, context: SSL.Context, timeout: float) -> socket.socket:
    """One TLS 1.3 handshake stopped where a device signs: the ClientHello sent and the server's whole flight
    received, the client's answer never sent. The hub holds it until its connect timeout."""
    sock = socket.create_connection((host, port), timeout=timeout)
    tls = SSL.Connection(context, None)
    tls.set_connect_state()
    try:
        tls.do_handshake()
    except SSL.WantReadError:
        pass
    sock.sendall(outgoing(tls))
    while True:  # until the client side has all of the server's flight (and has written an answer it keeps)
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise OSError("the hub closed the handshake")
        tls.bio_write(data)
        try:
            tls.do_handshake()
            return sock
        except SSL.WantReadError:
            continue
        except SSL.Error:
            return sock  # the client's own complaint (no certificate to give): the server's flight is in


def handshake_memory(host: str, port: int, pid: int, step: int = 300, levels: int = 4) -> dict | None:
    """The hub's resident memory per TLS handshake left waiting for the device: stalled handshakes held at
    once in ``levels`` steps of ``step``, the hub's memory read at each; the least-squares slope. Run it on a
    hub that has not held that many before (memory a process freed is reused before it grows). None when
    the hub cannot be probed (no TLS listener, not on this machine)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_verify(SSL.VERIFY_NONE, None)
    held: list[socket.socket] = []
    points = []
    try:
        for level in range(levels + 1):
            while len(held) < level * step:
                held.append(_stall(host, port, context, 5.0))
            time.sleep(0.2)  # the workers' own bookkeeping settles
            rss = hub_rss_kib(pid)
            if rss is None:
                return None
            points.append((len(held), rss))
    except OSError:
        return None
    finally:
        for s in held:
            s.close()
    x, y = np.array(points, dtype=float).T
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    spread = float(np.sum((y - y.mean()) ** 2))
    return {
        "kib_per_handshake": float(slope),
        "r2": 1 - float(np.sum((y - fitted) ** 2)) / spread if spread else None,
        "points": [[int(n), round(kib)] for n, kib in points],
    }


class HubWatch(threading.Thread):
    """Every half second: what the hub holds (its gauges) and its resident memory."""

    def __init__(self, host: str, port: int, pid: int | None, every: float = 0.5):
        super().__init__(daemon=True)
        self.host, self.port, self.pid, self.every = host, port, pid, every
        self.samples: list[dict] = []
        self.stop_event = threading.Event()

    def sample(self) -> None:
        row: dict = {"t": time.time()}
        text = fetch_metrics(self.host, self.port)
        if text is not None:
            row.update(parse_hold_metrics(text))
        if self.pid is not None:
            row["rss_kib"] = hub_rss_kib(self.pid)
        self.samples.append(row)

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            self.sample()

    def stop(self) -> list[dict]:
        self.stop_event.set()
        self.join(5)
        return self.samples
