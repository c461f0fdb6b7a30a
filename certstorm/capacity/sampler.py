"""The run's per-second samples: the hub's admissions and refusals from its Prometheus ``/metrics``, and
the CPU of hub, generator and machine."""

from __future__ import annotations

import http.client
import threading
import time

import psutil
from prometheus_client.parser import text_string_to_metric_families

from certstorm.processes import CpuMeter, HubProcess

__all__ = ["GEN_CORES", "Sampler", "parse_auth_metrics", "parse_cache_metrics"]

GEN_CORES = 1  # the swarm runs as one Locust process: at most one core


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


class Sampler(threading.Thread):
    """Once a second, for one segment (one hub lifetime): the hub's admissions and refusals from /metrics and
    the CPU of hub and generator, as per-second rates within the segment (so never negative)."""

    def __init__(self, hub: HubProcess, gen_pid: int, segment: str, workers: int, hub_cores: float, t_origin: float):
        super().__init__(daemon=True)
        self.hub, self.segment, self.workers, self.hub_cores = hub, segment, workers, hub_cores
        self.t_origin = t_origin
        self.hub_cpu, self.gen_cpu = CpuMeter(hub.proc.pid), CpuMeter(gen_pid)
        self.cores = psutil.cpu_count() or 1
        self.samples: list[dict] = []
        self.stop_event = threading.Event()
        self._last: dict | None = None

    def _read(self) -> dict | None:
        try:
            conn = http.client.HTTPConnection(self.hub.host, self.hub.port, timeout=5)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
        except (OSError, http.client.HTTPException):
            return None
        ok, bad = parse_auth_metrics(text)
        busy = psutil.cpu_times()
        return {
            "wall": time.time(),
            "ok": ok,
            "errors": bad,
            "reconnects": parse_cache_metrics(text),
            "hub": self.hub_cpu.read(),
            "gen": self.gen_cpu.read(),
            "machine": busy.user + busy.system + busy.nice + getattr(busy, "steal", 0.0),
        }

    def sample(self) -> None:
        now = self._read()
        if now is None:
            return
        last, self._last = self._last, now
        if last is None:
            return
        dt = now["wall"] - last["wall"]
        if dt <= 0:
            return
        self.samples.append(
            {
                "t": now["wall"] - self.t_origin,
                "wall": now["wall"],
                "segment": self.segment,
                "workers": self.workers,
                "ok_rate": max(0.0, now["ok"] - last["ok"]) / dt,
                "error_rate": max(0.0, now["errors"] - last["errors"]) / dt,
                "hub_cpu": (now["hub"] - last["hub"]) / dt / self.hub_cores,
                "gen_cpu": (now["gen"] - last["gen"]) / dt / GEN_CORES,
                "machine_cpu": (now["machine"] - last["machine"]) / dt / self.cores,
                "ok": now["ok"],
                "errors": now["errors"],
                "reconnects": now["reconnects"],
                "hub_cpu_s": now["hub"],
                "gen_cpu_s": now["gen"],
                "machine_cpu_s": now["machine"],
            }
        )

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(1.0)

    def stop(self):
        self.stop_event.set()
        self.join(5)
        self.sample()
