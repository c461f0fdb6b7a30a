"""Prometheus metrics that stay correct with several worker processes and cheap on the request path.

prometheus-client's multiprocess mode keeps every value in a per-process memory-mapped file under
``PROMETHEUS_MULTIPROC_DIR`` (the supervisor owns that directory and sets the variable before any
worker imports prometheus-client); ``GET /metrics`` merges the files of all workers, live and dead.
Each update to such a value takes a lock and writes the map, several times per authentication
(docs/design.md). So the request path only bumps plain Python counters and bucket arrays here, and
:meth:`Metrics.flush` (each worker's housekeeping timer, every 200 ms, and a clean stop) adds the
deltas to the shared values. Scrapes therefore lag by up to one flush interval.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (
    50e-6,
    100e-6,
    150e-6,
    200e-6,
    300e-6,
    500e-6,
    750e-6,
    1e-3,
    2e-3,
    5e-3,
    10e-3,
    25e-3,
    50e-3,
    0.1,
    0.25,
    1.0,
)


class BatchedHistogram:
    """Bucket counts kept in-process and added to a prometheus-client histogram (child) on flush.

    prometheus-client has no public "observe n at once", so :meth:`flush` adds to the child's own bucket
    and sum values (its private ``_upper_bounds``, ``_buckets`` and ``_sum``). pyproject.toml pins the
    releases where they are as used here, and tests/test_metrics.py fails if a release changes them.
    """

    __slots__ = ("bounds", "counts", "target", "total")

    def __init__(self, target):
        self.target = target
        self.bounds = list(target._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush(self) -> None:
        if not any(self.counts):
            return
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        buckets = self.target._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self.target._sum.inc(total)


# engine statistic -> result label of certstorm_chain_cache_total
_CACHE_RESULTS = (("reconnect", "reconnect"), ("warm", "hit"), ("cold", "miss"), ("deferred", "declined"))


class Metrics:
    """One worker's metrics. Create it in the worker process, after the supervisor set the directory."""

    def __init__(self, challenge_ttl: float):
        self._auth = Counter(
            "certstorm_authentications_total",
            "Device authentication outcomes: admitted, or refused at a step with an error code.",
            ["outcome", "step", "code"],
        )
        self._requests = Counter(
            "certstorm_http_requests_total", "HTTP requests by endpoint and status.", ["endpoint", "status"]
        )
        self._cache = Counter(
            "certstorm_chain_cache_total",
            "Device chain validations by cache result: reconnect (device cache: a device "
            "admitted before), hit (issuer cache: a new device under a validated path), miss "
            "(full RFC 5280 validation), declined (the warm path judged the device and could "
            "not vouch; also counted as miss). Hit rate = (reconnect + hit) / all.",
            ["result"],
        )
        self._throttled = Counter("certstorm_throttled_total", "Requests refused with 429 by the quota.")
        self._handoffs = Counter(
            "certstorm_fastpath_handoffs_total",
            "Connections the device fast path gave to aiohttp for the rest of their life, by "
            "what it would not take (request_line: another endpoint or method; a header; "
            "content_length: missing, repeated or over the limit).",
            ["reason"],
        )
        self._management_refused = Counter(
            "certstorm_management_refused_total",
            "Management calls refused for their credential (401), the caller's lock-out (429) or "
            "--management off (403), by error code.",
            ["code"],
        )
        request = Histogram(
            "certstorm_request_seconds",
            "Hub time per HTTP request, from the handler's start to its response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
        )
        self._request_hist = request
        self._request_children: dict[str, BatchedHistogram] = {}
        self.chain = BatchedHistogram(
            Histogram(
                "certstorm_chain_validation_seconds",
                "Challenge step inside the engine: body parsing, chain validation (warm or cold) and token sealing.",
                buckets=LATENCY_BUCKETS,
            )
        )
        self.pop = BatchedHistogram(
            Histogram(
                "certstorm_pop_verification_seconds",
                "Proof step inside the engine: token check, signature verification, replay claim and registry.",
                buckets=LATENCY_BUCKETS,
            )
        )
        self.tls = BatchedHistogram(
            Histogram(
                "certstorm_mqtts_admission_seconds",
                "MQTT-over-TLS admission inside the engine, after the handshake proved possession: chain "
                "validation (cached mode), revocation, registry.",
                buckets=LATENCY_BUCKETS,
            )
        )
        self._pending = Gauge(
            "certstorm_pending_challenges",
            "Challenges issued and not yet answered that have not expired (all workers; an "
            "expired challenge leaves the count within a second).",
            multiprocess_mode="livesum",
        )
        self._registry_pending = Gauge(
            "certstorm_registry_pending_writes",
            "Device registry updates waiting for the write-behind flush.",
            multiprocess_mode="livesum",
        )
        self._registry_lag = Gauge(
            "certstorm_registry_write_lag_seconds",
            "Age of the oldest device registry update not yet written to SQLite, at the "
            "last flush (the largest over workers).",
            multiprocess_mode="livemax",
        )
        self._cache_size = Gauge(
            "certstorm_issuer_cache_entries", "Cached intermediate CAs (all workers).", multiprocess_mode="livesum"
        )
        self._device_cache_size = Gauge(
            "certstorm_device_cache_entries",
            "Admitted device certificates remembered for reconnects (all workers).",
            multiprocess_mode="livesum",
        )
        self._mqtts = Gauge(
            "certstorm_mqtts_connections",
            "MQTT-over-TLS connections held (all workers), by state: handshake (from accept to CONNACK: the TLS "
            "handshake, then CONNECT) or connected.",
            ["state"],
            multiprocess_mode="livesum",
        )
        self.mqtts_handshaking = 0  # kept by hubsim.service.mqtts, published at each flush
        self.mqtts_connected = 0
        self._auth_counts: dict[tuple[str, str, str], int] = {}
        self._request_counts: dict[tuple[str, int], int] = {}
        self._throttled_count = 0
        self._handoff_counts: dict[str, int] = {}
        self._management_refusals: dict[str, int] = {}
        # Challenges this worker issued, and admitted proofs for, counted per whole second of their expiry
        # (rounded up): memory in proportion to the challenge lifetime, not to the number of challenges.
        self._issued: dict[int, int] = {}
        self._answered: dict[int, int] = {}
        self._cache_seen = (0,) * len(_CACHE_RESULTS)
        self.challenge_ttl = challenge_ttl

    # -- request path (plain Python only) --------------------------------------------------------------
    def request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        counts = self._request_counts
        counts[key] = counts.get(key, 0) + 1
        hist = self._request_children.get(endpoint)
        if hist is None:
            hist = self._request_children[endpoint] = BatchedHistogram(self._request_hist.labels(endpoint))
        hist.observe(seconds)

    def refused(self, step: str, code: str) -> None:
        key = ("refused", step, code)
        self._auth_counts[key] = self._auth_counts.get(key, 0) + 1

    def issued(self, expires_at: float) -> None:
        second = int(expires_at) + 1
        self._issued[second] = self._issued.get(second, 0) + 1

    def admitted(self, expires_at: float) -> None:
        key = ("admitted", "proof", "")
        self._auth_counts[key] = self._auth_counts.get(key, 0) + 1
        second = int(expires_at) + 1
        self._answered[second] = self._answered.get(second, 0) + 1

    def connected(self, step: str) -> None:
        """An admission that answered no challenge (a TLS handshake proved possession)."""
        key = ("admitted", step, "")
        self._auth_counts[key] = self._auth_counts.get(key, 0) + 1

    def throttled(self) -> None:
        self._throttled_count += 1

    def handoff(self, reason: str) -> None:
        self._handoff_counts[reason] = self._handoff_counts.get(reason, 0) + 1

    def management_refused(self, code: str) -> None:
        self._management_refusals[code] = self._management_refusals.get(code, 0) + 1

    # -- housekeeping -----------------------------------------------------------------------------------
    def flush(self, now: float, engine_stats: dict, registry_pending: int, registry_lag: float) -> None:
        counts, self._auth_counts = self._auth_counts, {}
        for labels, n in counts.items():
            self._auth.labels(*labels).inc(n)
        counts, self._request_counts = self._request_counts, {}
        for (endpoint, status), n in counts.items():
            self._requests.labels(endpoint, str(status)).inc(n)
        counts, self._management_refusals = self._management_refusals, {}
        for code, n in counts.items():
            self._management_refused.labels(code).inc(n)
        if self._throttled_count:
            self._throttled.inc(self._throttled_count)
            self._throttled_count = 0
        counts, self._handoff_counts = self._handoff_counts, {}
        for reason, n in counts.items():
            self._handoffs.labels(reason).inc(n)
        self.chain.flush()
        self.pop.flush()
        self.tls.flush()
        for hist in self._request_children.values():
            hist.flush()
        now_seen = tuple(engine_stats[key] for key, _ in _CACHE_RESULTS)
        for (_, result), count, seen in zip(_CACHE_RESULTS, now_seen, self._cache_seen):
            if count > seen:
                self._cache.labels(result).inc(count - seen)
        self._cache_seen = now_seen
        for counts in (self._issued, self._answered):
            for second in [s for s in counts if s <= now]:
                del counts[second]  # expired (a challenge leaves the count within a second of its expiry)
        self._pending.set(sum(self._issued.values()) - sum(self._answered.values()))
        self._registry_pending.set(registry_pending)
        self._registry_lag.set(registry_lag)
        self._cache_size.set(engine_stats["cache_size"])
        self._device_cache_size.set(engine_stats["device_cache_size"])
        self._mqtts.labels("handshake").set(self.mqtts_handshaking)
        self._mqtts.labels("connected").set(self.mqtts_connected)


def render() -> bytes:
    """The Prometheus text exposition of every worker's values (live and dead)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return generate_latest(registry)


def count_restart() -> None:
    """Called by the supervisor when it replaces a dead worker."""
    global _RESTARTS
    if _RESTARTS is None:
        _RESTARTS = Counter("certstorm_worker_restarts_total", "Worker processes the supervisor replaced.")
    _RESTARTS.inc()


_RESTARTS = None


__all__ = ["LATENCY_BUCKETS", "BatchedHistogram", "Metrics", "count_restart", "render"]
