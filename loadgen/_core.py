"""The swarm's per-process machinery: one device authentication, the measurements of a process, and the
device queues of the storm and churn shapes. ``swarm.py`` wires these into Locust.

One authentication (:meth:`Authenticator.authenticate`), as a device does it:

1. build the device's PEM chain (leaf re-spliced from the fleet template, then the intermediates);
2. ``POST /devices/challenge`` with it; the reply carries a base64 challenge;
3. sign the raw challenge bytes with the device's own key (loaded from the fleet record on first use);
4. ``POST /devices/proof`` with ``{"challenge", "signature"}``.

Locust's request statistics get the two HTTP requests only, ``POST challenge`` and ``POST proof``, so its
requests/s and aggregated percentiles count real requests. The whole authentication and the signing step
are timed in the swarm's own µs histograms (its summary, ``latency_us.csv`` and the end-of-run table), never
as Locust "requests". Failures are named by the hub's JSON error code (``throttled``, ``chain_untrusted``,
...), ``http_<status>`` when a refusal is not the hub's JSON, the transport failure (``connection_refused``,
``connection_reset``, ``timeout`` ...), or what made a reply unreadable (``chunked_reply``,
``reply_without_length``, ``reply_not_json``, ``reply_without_challenge``).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import os
import random
import resource
import time
from collections import Counter
from itertools import count

import numpy as np

from hubsim.algorithms import signature_args
from hubsim.encoding import pem_certificate
from loadgen._histo import Histogram
from devicekit.httpclient import Connection, Reply, WireError

PEM_TYPE = b"application/x-pem-file"
JSON_TYPE = b"application/json"
HISTOGRAMS = ("challenge", "sign", "proof", "auth", "auth_from_intended", "hub_chain", "hub_pop",
              "tcp_connect", "tls_handshake", "connack")  # the last three: the mqtts transport (_mqtt.py)
COSTS = ("prepare", "parse_challenge", "sign", "build_proof", "parse_proof")
RETRIABLE_STATUS = (429, 500, 502, 503, 504)
_HUB_STEP = {"challenge": "chain", "proof": "pop"}  # the Server-Timing entry each request reports

_now = time.time
_perf = time.perf_counter


def error_code(reply: Reply) -> str:
    """The hub's JSON error code of a refusal, or ``http_<status>`` when the reply does not carry one."""
    try:
        code = reply.json().get("error")
    except WireError:
        code = None
    return code if isinstance(code, str) and code else f"http_{reply.status}"


class Outcome:
    """What happened to one authentication attempt."""

    __slots__ = ("ok", "code", "step", "status", "retriable", "retry_after", "first")

    def __init__(self, ok: bool, code: str = "", step: str = "", status: int = 0, retriable: bool = False,
                 retry_after: float | None = None, first: bool = False):
        self.ok, self.code, self.step, self.status = ok, code, step, status
        self.retriable, self.retry_after, self.first = retriable, retry_after, first


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
        out = {"pid": os.getpid(), "user_s": round(ru.ru_utime, 3), "system_s": round(ru.ru_stime, 3),
               "max_rss_kib": ru.ru_maxrss}
        if self.window_start is None:
            return out
        end = self.window_end or self.point()
        wall = end[0] - self.window_start[0]
        cpu = end[1] - self.window_start[1]
        out.update(window_wall_s=round(wall, 3), window_cpu_s=round(cpu, 3),
                   utilization=round(cpu / wall, 4) if wall > 0 else None)
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
        self.costs = {name: [0, 0] for name in COSTS}   # ns, count
        self.counts: Counter = Counter()
        self.failures: Counter = Counter()                # "step:code"
        self.timeline: dict[int, list[int]] = {}          # epoch second -> [intended, admitted, failed, retries]
        self.curve: dict[int, list[int]] = {}             # 0.1 s since t0 -> [attempts, admitted, refused]
        self.online_delta: Counter = Counter()           # epoch second -> change of devices online (churn)
        self.admitted = np.zeros(fleet_count, dtype=bool)
        self.first_pass_admissions = 0
        self.duplicate_in_pass = 0
        self.cpu = CpuMonitor()

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

    def admission(self, index: int, pass_number: int, seconds: float, *, intended: float | None = None,
                  phase: int | None = None, first: bool = False) -> None:
        """One admitted device, whatever the transport: its latency (whole, from its intended start, and
        in its load phase), the counts and the timeline."""
        self.hist["auth"].record(seconds * 1e6)
        now = _now()
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
        }
        if extra:
            out.update(extra)
        return out


class Authenticator:
    """Performs authentications for one process and records them (shared by all its users)."""

    def __init__(self, fleet, recorder: Recorder, fire):
        self.fleet = fleet
        self.rec = recorder
        self.fire = fire
        self.intermediates = fleet._intermediates_pem
        # the scheme is the fleet's, not the key's: look it up once (isinstance checks on ABCs are not free)
        self.sign_args = signature_args(fleet.identity(0).private_key) if fleet.count else ()

    def authenticate(self, conn: Connection, index: int, pass_number: int = 0, *, intended: float | None = None,
                     phase: int | None = None) -> Outcome:
        rec, perf = self.rec, _perf
        costs = rec.costs
        t0 = perf()
        identity = self.fleet.identity(index)
        body = pem_certificate(identity.certificate_der) + self.intermediates
        t1 = perf()
        _add(costs["prepare"], t1 - t0)
        result = self._exchange(conn, "challenge", b"/devices/challenge", PEM_TYPE, body, t1, t0)
        if type(result) is Outcome:
            return result
        (challenge, raw), t2 = result
        t3 = perf()
        _add(costs["parse_challenge"], t3 - t2)
        signature = identity.private_key.sign(raw, *self.sign_args)
        t4 = perf()
        _add(costs["sign"], t4 - t3)
        rec.hist["sign"].record((t4 - t3) * 1e6)
        proof = b'{"challenge":"%s","signature":"%s"}' % (challenge, binascii.b2a_base64(signature, newline=False))
        t5 = perf()
        _add(costs["build_proof"], t5 - t4)
        result = self._exchange(conn, "proof", b"/devices/proof", JSON_TYPE, proof, t5, t0)
        if type(result) is Outcome:
            return result
        first, t6 = result
        t7 = perf()
        _add(costs["parse_proof"], t7 - t6)
        total = t6 - t0
        rec.admission(index, pass_number, total, intended=intended, phase=phase, first=first)
        return Outcome(True, first=first)

    def _exchange(self, conn: Connection, step: str, path: bytes, content_type: bytes, body: bytes, sent: float,
                  t0: float):
        """One request of an authentication, sent at ``sent``: records the hub's Server-Timing for the
        step and, on a 200, the Locust entry and the step's histogram. Returns ``(what the step's reader
        found in the reply, received)``, or the failed :class:`Outcome` when the connection failed, the hub
        refused, or its 200 did not carry what the step needs (``reply_not_json``, ...)."""
        rec, perf = self.rec, _perf
        try:
            reply = conn.post(path, content_type, body)
        except WireError as exc:
            return self._failed(step, exc.code, 0, perf() - sent, t0, retriable=True)
        received = perf()
        hub_step = _HUB_STEP[step]
        timing = reply.server_timing()
        if hub_step in timing:
            rec.hist["hub_" + hub_step].record(timing[hub_step] * 1000.0)
        if reply.status != 200:
            return self._failed(step, error_code(reply), reply.status, received - sent, t0,
                                retriable=reply.status in RETRIABLE_STATUS, retry_after=reply.retry_after())
        try:
            found = _READERS[step](reply.json())
        except WireError as exc:
            return self._failed(step, exc.code, reply.status, received - sent, t0, retriable=False)
        self.fire(request_type="POST", name=step, response_time=(received - sent) * 1000.0,
                  response_length=len(reply.body), exception=None, context={})
        rec.hist[step].record((received - sent) * 1e6)
        return found, received

    def _failed(self, step: str, code: str, status: int, elapsed: float, t0: float, *, retriable: bool,
                retry_after: float | None = None) -> Outcome:
        rec = self.rec
        self.fire(request_type="POST", name=step, response_time=elapsed * 1000.0, response_length=0,
                  exception=code, context={})
        rec.counts["failed"] += 1
        rec.failures[f"{step}:{code}"] += 1
        rec.second(_now())[2] += 1
        return Outcome(False, code, step, status, retriable, retry_after)


def _challenge_of(data: dict) -> tuple[bytes, bytes]:
    """The challenge of a 200 reply to the challenge request: as sent back in the proof, and decoded."""
    token = data.get("challenge")
    try:
        text = token.encode("ascii")
        return text, base64.b64decode(text, validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error):
        raise WireError("reply_without_challenge", "the challenge reply has no base64 challenge") from None


def _first_connection_of(data: dict) -> bool:
    return data.get("first_connection") is True


_READERS = {"challenge": _challenge_of, "proof": _first_connection_of}


def _add(slot: list, seconds: float) -> None:
    slot[0] += int(seconds * 1e9)
    slot[1] += 1


class DeviceQueue:
    """Devices waiting for their next connection attempt, earliest first (storm and churn).

    A device costs a heap entry while it waits, not a greenlet: connection slots pop due devices, attempt
    them, and push them back with their next due time (a backoff after a refusal; for churn, the end of
    its stay plus its time away after an admission).
    """

    def __init__(self, devices, start: float, spread: float = 0.0, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self._seq = count()
        self.heap: list = []
        self.start = start
        self.total = len(devices)
        if spread > 0:
            for index in devices:
                # (due, tie, device, retry number, first attempt time, previous delay)
                self.heap.append((start + self.rng.random() * spread, next(self._seq), index, 0, None, 0.0))
            heapq.heapify(self.heap)
            self._fresh = iter(())
            self._fresh_left = 0
        else:
            # all due at `start`, before any retry: hand them out in order without a heap entry each,
            # so a storm of a million devices costs memory only for the devices actually refused
            self._fresh = iter(devices)
            self._fresh_left = self.total
        self.in_flight = 0
        self.admitted = 0
        self.gave_up = 0

    def __len__(self) -> int:
        return len(self.heap) + self._fresh_left

    def next_due(self) -> float | None:
        if self._fresh_left:
            return self.start
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float):
        if self._fresh_left and now >= self.start:
            self._fresh_left -= 1
            self.in_flight += 1
            return (self.start, -1, next(self._fresh), 0, None, 0.0)
        if self.heap and self.heap[0][0] <= now:
            self.in_flight += 1
            return heapq.heappop(self.heap)
        return None

    def push(self, due: float, index: int, retry: int, first_attempt: float | None, previous: float) -> None:
        heapq.heappush(self.heap, (due, next(self._seq), index, retry, first_attempt, previous))

    def settle(self) -> None:
        self.in_flight -= 1

    @property
    def finished(self) -> bool:
        return not self.heap and not self._fresh_left and self.in_flight == 0

    def exp(self, mean: float) -> float:
        return self.rng.expovariate(1.0 / mean) if mean > 0 else 0.0


def summarize_timeline(timeline: dict[int, list[int]]) -> dict:
    if not timeline:
        return {}
    first, last = min(timeline), max(timeline)
    seconds = list(range(first, last + 1))
    cols = list(zip(*[timeline.get(s, [0, 0, 0, 0]) for s in seconds]))
    return {"start_epoch_s": first, "intended": list(cols[0]), "admitted": list(cols[1]),
            "failed": list(cols[2]), "retries": list(cols[3])}


__all__ = ["Authenticator", "CpuMonitor", "DeviceQueue", "Outcome", "Recorder", "HISTOGRAMS", "COSTS",
           "error_code", "summarize_timeline"]
