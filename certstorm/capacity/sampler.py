"""The run's per-second samples of the target's and the machine's CPU, and of a hub's own counts."""

from __future__ import annotations

import http.client
import threading
import time

import psutil
from prometheus_client.parser import text_string_to_metric_families

from certstorm.processes import HubProcess

__all__ = ["SecondSampler", "parse_auth_metrics", "parse_cache_metrics"]


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


class SecondSampler(threading.Thread):
    """Just after each whole second: the target's CPU seconds so far and its busiest thread's since the
    last second, the machine's busy CPU seconds, and, from a hub's ``/metrics``, its admissions, refusals
    and reconnects so far. A sample keyed by second ``s`` was read at ``s + OFFSET``."""

    OFFSET = 0.05

    def __init__(self, meter, hub: HubProcess | None = None):
        super().__init__(daemon=True)
        self.meter, self.hub = meter, hub
        self.samples: list[dict] = []
        self.stop_event = threading.Event()

    def _hub_counts(self) -> tuple:
        if self.hub is None:
            return None, None, None
        try:
            conn = http.client.HTTPConnection(self.hub.host, self.hub.port, timeout=2)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
        except (OSError, http.client.HTTPException):
            return None, None, None
        ok, bad = parse_auth_metrics(text)
        return ok, bad, parse_cache_metrics(text)

    def sample(self, second: int) -> None:
        cpu, busiest = self.meter.read() if self.meter is not None else (None, 0.0)
        busy = psutil.cpu_times()
        ok, bad, again = self._hub_counts()
        self.samples.append(
            {
                "second": second,
                "cpu_s": cpu,
                "busiest_s": busiest,
                "machine_s": busy.user + busy.system + busy.nice + getattr(busy, "steal", 0.0),
                "hub_ok": ok,
                "hub_err": bad,
                "hub_reconnects": again,
            }
        )

    def run(self):
        while True:
            now = time.time()
            second = int(now) + 1
            if self.stop_event.wait(second + self.OFFSET - now):
                return
            self.sample(second)

    def stop(self):
        self.stop_event.set()
        self.join(5)
