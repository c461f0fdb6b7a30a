"""The run's per-second samples of the target's and the machine's CPU, and of a hub's own counts."""

from __future__ import annotations

import http.client
import threading
import time

import psutil
from prometheus_client.parser import text_string_to_metric_families

from certstorm.processes import HubProcess

__all__ = ["SecondSampler", "fetch_metrics", "parse_auth_metrics", "parse_cache_metrics"]


def parse_cache_metrics(text: str) -> float:
    """Device chains answered by the hub's device cache (reconnects of devices admitted before), from the
    hub's Prometheus text: the rest of the admissions were first connections."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "certstorm_chain_cache":
            total += sum(
                s.value
                for s in family.samples
                if s.name == "certstorm_chain_cache_total" and s.labels.get("result") == "reconnect"
            )
    return total


def parse_auth_metrics(text: str) -> tuple[float, float]:
    """(admitted, refused) totals from the hub's Prometheus text."""
    ok = bad = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "certstorm_authentications":
            continue
        for sample in family.samples:
            if sample.name != "certstorm_authentications_total":
                continue
            if sample.labels.get("outcome") == "admitted":
                ok += sample.value
            else:
                bad += sample.value
    return ok, bad


def fetch_metrics(host: str, port: int) -> str | None:
    """A hub's ``/metrics`` text, or None when it did not answer (a missed reading, not an error)."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    return text


class SecondSampler:
    """Just after each whole second: the target's CPU seconds so far and its busiest thread's since the
    last reading, and the machine's busy CPU seconds; on a clock of its own (a saturated hub answers
    ``/metrics`` late), a hub's admissions, refusals and reconnects so far. Each row carries the time it
    was read (``t``), so a late reading is still placed right."""

    OFFSET = 0.05

    def __init__(self, meter, hub: HubProcess | None = None):
        self.meter, self.hub = meter, hub
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self._clocks = [threading.Thread(target=self._every_second, args=(self._read_cpu,), daemon=True)]
        if hub is not None:
            self._clocks.append(threading.Thread(target=self._every_second, args=(self._read_hub,), daemon=True))

    def _read_cpu(self) -> None:
        cpu, busiest = self.meter.read() if self.meter is not None else (None, 0.0)
        busy = psutil.cpu_times()
        machine = busy.user + busy.system + busy.nice + getattr(busy, "steal", 0.0)
        self.samples.append({"t": time.time(), "cpu_s": cpu, "busiest_s": busiest, "machine_s": machine})

    def _read_hub(self) -> None:
        text = fetch_metrics(self.hub.host, self.hub.port)
        if text is None:
            return
        read_at = time.time()
        ok, bad = parse_auth_metrics(text)
        self.samples.append({"t": read_at, "hub_ok": ok, "hub_err": bad, "hub_reconnects": parse_cache_metrics(text)})

    def _every_second(self, read) -> None:
        while True:
            now = time.time()
            if self.stop_event.wait(int(now) + 1 + self.OFFSET - now):
                return
            read()

    def start(self) -> None:
        for clock in self._clocks:
            clock.start()

    def stop(self) -> None:
        self.stop_event.set()
        for clock in self._clocks:
            clock.join(5)
