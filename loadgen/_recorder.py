"""The measurements of one swarm process, mergeable across processes: µs histograms, counts, failures by
code, the per-second timeline, the storm's admission curve, which devices were admitted, and the
process's own CPU."""

from __future__ import annotations

import base64
import os
import resource
import time
from collections import Counter

import numpy as np

from loadgen._histo import Histogram, sparse_counts

__all__ = ["COSTS", "HISTOGRAMS", "CpuMonitor", "Recorder", "summarize_timeline"]

HISTOGRAMS = (
    "challenge",
    "sign",
    "proof",
    "auth",
    "auth_from_intended",
    "hub_chain",
    "hub_pop",
    "tcp_connect",
    "tls_handshake",
    "connack",
)  # the last three: the mqtts transport (_mqtt.py)
COSTS = ("prepare", "parse_challenge", "sign", "build_proof", "parse_proof")

_now = time.time


class CpuMonitor:
    """This process's CPU use: process time over wall time, sampled every second, plus the measurement
    window (first authentication to the end of the run)."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.window_start: tuple[float, float] | None = None
        self.window_end: tuple[float, float] | None = None

    @staticmethod
    def point() -> tuple[float, float]:
        return _now(), time.process_time()

    def sample(self) -> None:
        self.samples.append(self.point())

    def start(self) -> None:
        if self.window_start is None:
            self.window_start = self.point()
            self.samples.append(self.window_start)

    def stop(self) -> None:
        if self.window_start is not None and self.window_end is None:
            self.window_end = self.point()
            self.samples.append(self.window_end)

    def report(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "pid": os.getpid(),
            "user_s": round(ru.ru_utime, 3),
            "system_s": round(ru.ru_stime, 3),
            "max_rss_kib": ru.ru_maxrss,
        }
        if self.window_start is None:
            return out
        end = self.window_end or self.point()
        wall = end[0] - self.window_start[0]
        cpu = end[1] - self.window_start[1]
        out.update(
            window_wall_s=round(wall, 3),
            window_cpu_s=round(cpu, 3),
            utilization=round(cpu / wall, 4) if wall > 0 else None,
        )
        # peak over any 5 s stretch of the per-second samples inside the window
        pts = [p for p in self.samples if self.window_start[0] <= p[0] <= end[0]]
        peak = None
        j = 0
        for i in range(len(pts)):
            while j < len(pts) and pts[j][0] - pts[i][0] < 5.0:
                j += 1
            if j < len(pts):
                w = pts[j][0] - pts[i][0]
                u = (pts[j][1] - pts[i][1]) / w
                peak = u if peak is None else max(peak, u)
        out["peak_5s_utilization"] = round(peak, 4) if peak is not None else out["utilization"]
        return out


class Recorder:
    """Every measurement of one process, mergeable across processes."""

    def __init__(self, fleet_count: int, t0: float):
        self.t0 = t0
        self.hist = {name: Histogram() for name in HISTOGRAMS}
        self.phase_hist: dict[int, Histogram] = {}
        self.costs = {name: [0, 0] for name in COSTS}  # ns, count
        self.counts: Counter = Counter()
        self.failures: Counter = Counter()  # "step:code"
        self.timeline: dict[int, list[int]] = {}  # epoch second -> [intended, admitted, failed, retries]
        self.curve: dict[int, list[int]] = {}  # 0.1 s since t0 -> [attempts, admitted, refused]
        self.online_delta: Counter = Counter()  # epoch second -> change of devices online (churn)
        self.admitted = np.zeros(fleet_count, dtype=bool)
        self.first_pass_admissions = 0
        self.duplicate_in_pass = 0
        self.cpu = CpuMonitor()
        self.second_latency: dict[int, list[float]] = {}  # epoch second -> µs of the admissions ending then
        self.reported_until = 0  # the live reports hold every second before this one
        # Little's law, measured: 0.1 s since t0 -> [sum of in-flight samples, samples], and -> [seconds of the
        # attempts ending then, attempts]; what --device-profile and --network made the devices wait
        self.in_flight: dict[int, list[float]] = {}
        self.attempt_time: dict[int, list[float]] = {}
        self.waited = {"sign": [0.0, 0], "rtt": [0.0, 0]}

    def second(self, t: float) -> list[int]:
        s = int(t)
        row = self.timeline.get(s)
        if row is None:
            row = self.timeline[s] = [0, 0, 0, 0]
        return row

    def bucket(self, t: float) -> list[int]:
        b = int((t - self.t0) * 10)
        row = self.curve.get(b)
        if row is None:
            row = self.curve[b] = [0, 0, 0]
        return row

    def sample_in_flight(self, t: float, n: int) -> None:
        b = int((t - self.t0) * 10)
        row = self.in_flight.get(b)
        if row is None:
            row = self.in_flight[b] = [0.0, 0]
        row[0] += n
        row[1] += 1

    def attempt_ended(self, started: float, ended: float) -> None:
        b = int((ended - self.t0) * 10)
        row = self.attempt_time.get(b)
        if row is None:
            row = self.attempt_time[b] = [0.0, 0]
        row[0] += ended - started
        row[1] += 1

    def admission(
        self,
        index: int,
        pass_number: int,
        seconds: float,
        *,
        intended: float | None = None,
        phase: int | None = None,
        first: bool = False,
    ) -> None:
        """One admitted device, whatever the transport: its latency (whole, from its intended start, and
        in its load phase), the counts and the timeline."""
        self.hist["auth"].record(seconds * 1e6)
        now = _now()
        second = int(now)
        lat = self.second_latency.get(second)
        if lat is None:
            lat = self.second_latency[second] = []
        lat.append(seconds * 1e6)
        if intended is not None:
            self.hist["auth_from_intended"].record((now - intended) * 1e6)
        if phase is not None:
            h = self.phase_hist.get(phase)
            if h is None:
                h = self.phase_hist[phase] = Histogram()
            h.record(seconds * 1e6)
        self.counts["admitted"] += 1
        if first:
            self.counts["first_connection"] += 1
        self.second(now)[1] += 1
        self.admit(index, pass_number)

    def ended_seconds(self, before: int) -> list[dict]:
        """The seconds from the last call up to ``before`` (not included): counts and the admissions' latency
        as sparse histogram buckets, for the live reports; each second is handed out once."""
        start = self.reported_until or min([*self.timeline, *self.second_latency], default=before)
        out = []
        for second in range(start, before):
            row = self.timeline.get(second, (0, 0, 0, 0))
            lat = self.second_latency.pop(second, None)
            out.append(
                {
                    "second": second,
                    "intended": row[0],
                    "admitted": row[1],
                    "failed": row[2],
                    "retries": row[3],
                    "lat": sparse_counts(lat) if lat else None,
                }
            )
        self.reported_until = max(self.reported_until, before)
        return out

    def admit(self, index: int, pass_number: int) -> None:
        if pass_number == 0:
            if self.admitted[index]:
                self.duplicate_in_pass += 1
            self.first_pass_admissions += 1
        self.admitted[index] = True

    def to_dict(self, extra: dict | None = None) -> dict:
        bits = np.packbits(self.admitted)
        out = {
            "histograms": {k: h.to_dict() for k, h in self.hist.items()},
            "phase_histograms": {str(k): h.to_dict() for k, h in self.phase_hist.items()},
            "costs": {k: list(v) for k, v in self.costs.items()},
            "counts": dict(self.counts),
            "failures": dict(self.failures),
            "timeline": {str(k): v for k, v in sorted(self.timeline.items())},
            "curve": {str(k): v for k, v in sorted(self.curve.items())},
            "online_delta": {str(k): v for k, v in sorted(self.online_delta.items())},
            "admitted_bits": base64.b64encode(bits.tobytes()).decode("ascii"),
            "admitted_count": int(self.admitted.sum()),
            "first_pass_admissions": self.first_pass_admissions,
            "duplicate_in_pass": self.duplicate_in_pass,
            "cpu": self.cpu.report(),
            "in_flight": {str(k): v for k, v in sorted(self.in_flight.items())},
            "attempt_time": {str(k): v for k, v in sorted(self.attempt_time.items())},
            "waited": self.waited,
        }
        if extra:
            out.update(extra)
        return out


def summarize_timeline(timeline: dict[int, list[int]]) -> dict:
    if not timeline:
        return {}
    first, last = min(timeline), max(timeline)
    seconds = list(range(first, last + 1))
    cols = list(zip(*[timeline.get(s, [0, 0, 0, 0]) for s in seconds]))
    return {
        "start_epoch_s": first,
        "intended": list(cols[0]),
        "admitted": list(cols[1]),
        "failed": list(cols[2]),
        "retries": list(cols[3]),
    }
