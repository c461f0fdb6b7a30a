"""The system a run measures, and how its CPU is read.

A target is the hub the run starts itself, or any system at ``--target URL``: an MQTT broker or hub over
mutual TLS (``mqtts://host:port``) or a certstorm hub's HTTP device API (``http://`` or ``https://``).
Its CPU comes from a local process tree (``--target-pid``: every thread's time, so a single-threaded
broker saturates at one busy thread however many cores the machine has) or from Prometheus text
(``--target-metrics``: ``process_cpu_seconds_total``); with neither, the target's cost is unknown and
steps are judged by latency, errors and the rate delivered only.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["SCHEMES", "MetricsMeter", "PidMeter", "Target", "TargetError", "parse_target"]

SCHEMES = {"mqtts": 8883, "http": 80, "https": 443}


class TargetError(ValueError):
    """A target that cannot be measured, with the argument it came from."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"argument {argument}: {message}")


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int

    @property
    def transport(self) -> str:
        return "mqtts" if self.scheme == "mqtts" else "http"

    def check_reachable(self, timeout: float = 3.0) -> None:
        """TargetError unless a TCP connection to the target opens."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise TargetError("--target", f"cannot reach {self.url} ({reason})") from None


def parse_target(text: str) -> Target:
    """``mqtts://host:port``, ``http://host:port`` or ``https://host:port``; TargetError otherwise."""
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise TargetError("--target", f"{text!r} is not mqtts://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise TargetError("--target", f"{text!r} has no valid port") from None
    url = f"{parts.scheme}://{parts.hostname}:{port}"
    return Target(url, parts.scheme, parts.hostname, port)


class PidMeter:
    """CPU seconds of a local process tree: the total, and the busiest thread's since the last read.
    Processes and threads that end or are replaced never make the total go backwards."""

    def __init__(self, pid: int, argument: str = "--target-pid"):
        try:
            self.root = psutil.Process(pid)
            self.name = self.root.name()
            self.cores = len(self.root.cpu_affinity()) if hasattr(self.root, "cpu_affinity") else psutil.cpu_count()
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError) as exc:
            raise TargetError(
                argument, f"{pid} is not a process this user can measure ({type(exc).__name__})"
            ) from None
        self.pid = pid
        self._threads: dict[tuple[int, int], float] = {}
        self.total = 0.0

    def describe(self) -> str:
        return f"process {self.pid} ({self.name}) and its children"

    def read(self) -> tuple[float, float]:
        """(CPU seconds so far, the busiest thread's CPU seconds since the last read)."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return self.total, 0.0
        busiest = 0.0
        for proc in procs:
            try:
                threads = proc.threads()
            except psutil.Error:
                continue
            for thread in threads:
                key = (proc.pid, thread.id)
                now = thread.user_time + thread.system_time
                grew = now - self._threads.get(key, 0.0)
                if grew > 0:
                    self.total += grew
                    busiest = max(busiest, grew)
                    self._threads[key] = now
        return self.total, busiest


class MetricsMeter:
    """CPU seconds from a Prometheus endpoint's ``process_cpu_seconds_total`` (summed over its series)."""

    def __init__(self, url: str, argument: str = "--target-metrics"):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(argument, f"{url!r} is not an http:// or https:// URL")
        self.url, self.parts = url, parts
        self.cores = 1
        self.argument = argument
        if self._scrape() is None:
            raise TargetError(argument, f"{url} serves no process_cpu_seconds_total")

    def describe(self) -> str:
        return f"process_cpu_seconds_total at {self.url}"

    def _scrape(self) -> float | None:
        conn_type = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        try:
            conn = conn_type(self.parts.hostname, self.parts.port, timeout=3)
            conn.request("GET", self.parts.path or "/metrics")
            text = conn.getresponse().read().decode("utf-8", "replace")
            conn.close()
        except (OSError, http.client.HTTPException) as exc:
            raise TargetError(self.argument, f"cannot read {self.url} ({exc})") from None
        total = None
        try:
            for family in text_string_to_metric_families(text):
                if family.name == "process_cpu_seconds":
                    for sample in family.samples:
                        if sample.name == "process_cpu_seconds_total":
                            total = (total or 0.0) + sample.value
        except ValueError:
            return None
        return total

    def read(self) -> tuple[float | None, float]:
        """(CPU seconds so far, or None when the endpoint did not answer; 0.0: no thread is known)."""
        try:
            return self._scrape(), 0.0
        except TargetError:
            return None, 0.0
