"""Capacity planning from measurements: Universal Scalability Law fits, reconnect-storm simulation,
and the sizing question "to admit D devices within T at p99 <= X, how many hub cores?".

USL (Gunther): X(N) = gamma*N / (1 + alpha*(N-1) + beta*N*(N-1)). With C = X/X(1), x = N-1 and
y = N/C - 1, the model is y = beta*x^2 + (alpha+beta)*x through the origin: one least-squares fit.

The storm simulator is discrete-event in time buckets: every device tries at once (or spread over a
window), the hub admits up to its capacity (a token bucket, so bursts are briefly absorbed), refused
devices come back after their SDK's backoff. It costs O(total attempts), so millions of devices
simulate in seconds. With a device profile (:mod:`devicekit.profiles`) an attempt takes time: its round
trips and its signature are drawn per attempt, the hub decides when the request that is throttled or
admitted arrives (HTTP: the challenge, then the proof; MQTT over TLS: CONNECT, after the handshake), and
the simulation keeps the attempts in flight, device side and hub side, over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from devicekit.profiles import Profile

# delays(retry_number >= 1 as an int array, previous delays, rng) -> seconds to wait, as an array
Backoff = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class USL:
    gamma: float  # throughput of one worker
    alpha: float  # contention
    beta: float  # coherency (crosstalk)

    def throughput(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return self.gamma * n / (1 + self.alpha * (n - 1) + self.beta * n * (n - 1))

    @property
    def peak_workers(self) -> float:
        """N* = sqrt((1 - alpha) / beta); infinite when there is no coherency cost."""
        if self.beta <= 0:
            return math.inf
        return math.sqrt(max(0.0, 1 - self.alpha) / self.beta)

    def workers_for(self, rate: float, limit: int = 4096) -> int | None:
        """Fewest workers whose predicted throughput reaches ``rate``; None if the curve never does."""
        n = np.arange(1, limit + 1)
        ok = np.nonzero(self.throughput(n) >= rate)[0]
        return int(n[ok[0]]) if ok.size else None


def fit_usl(workers, throughput) -> USL:
    """Least-squares USL fit; needs the 1-worker point and at least two other worker counts."""
    n = np.asarray(workers, dtype=float)
    x_obs = np.asarray(throughput, dtype=float)
    if n.shape != x_obs.shape or n.size < 3 or len(set(n.tolist())) < 3:
        raise ValueError("a USL fit needs throughput at three or more distinct worker counts")
    if 1 not in set(n.tolist()):
        raise ValueError("a USL fit needs the 1-worker throughput")
    if np.any(x_obs <= 0):
        raise ValueError("throughputs must be positive")
    gamma = float(np.mean(x_obs[n == 1]))
    c = x_obs / gamma
    x = n - 1
    y = n / c - 1
    design = np.column_stack([x * x, x])
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    beta = max(0.0, float(a))
    alpha = max(0.0, float(b - a))
    return USL(gamma, alpha, beta)


@dataclass
class StormResult:
    devices: int
    admitted: int
    time_to_admit: float  # seconds until the last device was admitted (inf if not all were)
    attempts: int
    refusals: int
    peak_pending_challenges: float  # Little's law: admission rate x challenge-to-proof latency
    curve_t: np.ndarray = field(repr=False)  # bucket end times
    curve_admitted: np.ndarray = field(repr=False)  # devices admitted by then
    # with a profile: attempts under way per bucket, device side and hub side (challenges awaiting their
    # proof, or TLS handshakes awaiting CONNECT), and attempts started per bucket
    curve_in_flight: np.ndarray | None = field(default=None, repr=False)
    curve_hub_in_flight: np.ndarray | None = field(default=None, repr=False)
    curve_started: np.ndarray | None = field(default=None, repr=False)

    def admitted_by(self, t: float) -> int:
        i = np.searchsorted(self.curve_t, t, side="right") - 1
        return int(self.curve_admitted[i]) if i >= 0 else 0

    def time_to_fraction(self, fraction: float) -> float:
        target = math.ceil(self.devices * fraction)
        i = np.searchsorted(self.curve_admitted, target, side="left")
        return float(self.curve_t[i]) if i < self.curve_t.size else math.inf


def simulate_storm(
    devices: int,
    capacity: float,
    backoff: Backoff,
    *,
    burst: float | None = None,
    spread: float = 0.0,
    latency: float = 0.005,
    dt: float = 0.01,
    horizon: float = 3600.0,
    seed: int = 0,
    max_retries: int = 32,
    attempt_rate: float | None = None,
    profile: Profile | None = None,
    transport: str = "http",
) -> StormResult:
    """``devices`` reconnect at once (or uniformly over ``spread`` seconds) against a hub that admits
    ``capacity`` per second with a bucket of ``burst`` (default: one second's worth); refused devices
    retry after ``backoff``. Stops when all are admitted or at ``horizon``.

    ``attempt_rate`` caps how many attempts can be made per second (a load generator's connection slots;
    real devices, each with its own connection, have no such cap): attempts due beyond it wait for the
    next bucket, which spreads a herd out.

    Devices are counted per (time bucket, retry number): all devices on their k-th retry in one bucket
    are alike, so the simulation costs O(buckets x retry levels + attempts) whatever the fleet size.

    ``profile`` (with ``transport``, ``http`` or ``mqtts``) gives each attempt its round trips and its
    signature (:func:`_simulate_profiled`); each step's delay is drawn from the fleet's mix independently.
    """
    if devices <= 0 or capacity <= 0 or dt <= 0:
        raise ValueError("devices, capacity and dt must be positive")
    if profile is not None:
        return _simulate_profiled(
            devices, capacity, backoff, profile, transport, burst=burst, spread=spread, dt=dt, horizon=horizon,
            seed=seed, max_retries=max_retries, attempt_rate=attempt_rate, latency=latency,
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    burst = capacity if burst is None else burst
    n_buckets = math.ceil(horizon / dt)
    pending = np.zeros((n_buckets + 1, max_retries + 1), dtype=np.int32)
    if spread > 0:
        np.add.at(pending[:, 0], np.minimum((rng.uniform(0, spread, devices) / dt).astype(np.int64), n_buckets), 1)
    else:
        pending[0, 0] = devices
    tokens = burst
    admitted = attempts = refusals = 0
    waiting = devices
    curve_a = np.zeros(n_buckets, dtype=np.int64)
    peak_rate = 0.0
    last_admit = math.inf
    end = n_buckets
    for b in range(n_buckets):
        tokens = min(burst, tokens + capacity * dt)
        counts = pending[b]
        n = int(counts.sum())
        if attempt_rate is not None and n > attempt_rate * dt and b < n_buckets:
            slots = max(1, int(attempt_rate * dt))
            now_counts = rng.multivariate_hypergeometric(counts, slots)
            pending[b + 1] += counts - now_counts  # not reached yet: still waiting next bucket
            counts = now_counts
            n = slots
        if n:
            attempts += n
            k = min(n, int(tokens))
            tokens -= k
            admitted += k
            waiting -= k
            peak_rate = max(peak_rate, k / dt)
            if k:
                last_admit = (b + 1) * dt
            if k < n:
                refused = counts - rng.multivariate_hypergeometric(counts, k)
                refusals += n - k
                for level in np.flatnonzero(refused):
                    m = int(refused[level])
                    retry = min(level + 1, max_retries)
                    delays = np.maximum(backoff(np.full(m, level + 1), np.zeros(m), rng), dt)
                    offsets = np.bincount(np.minimum((delays / dt).astype(np.int64), n_buckets - b - 1))
                    pending[b + 1 : b + 1 + offsets.size, retry] += offsets
        curve_a[b] = admitted
        if waiting == 0:
            end = b + 1
            break
    curve_t = (np.arange(end) + 1) * dt
    return StormResult(
        devices,
        admitted,
        last_admit if admitted == devices else math.inf,
        attempts,
        refusals,
        peak_rate * latency,
        curve_t,
        curve_a[:end],
    )


def _bins(b: int, seconds: np.ndarray, dt: float, last: int) -> np.ndarray:
    """The buckets ``seconds`` after bucket ``b``, at least the same one, at most ``last``."""
    return np.minimum(b + (seconds / dt).astype(np.int64), last)


def _simulate_profiled(
    devices: int,
    capacity: float,
    backoff: Backoff,
    profile: Profile,
    transport: str,
    *,
    burst: float | None,
    spread: float,
    dt: float,
    horizon: float,
    seed: int,
    max_retries: int,
    attempt_rate: float | None,
    latency: float,
) -> StormResult:
    """:func:`simulate_storm` where attempts take time. An attempt starts in bucket b; its request reaches the
    hub's decision (HTTP: the challenge, after a round trip; MQTT over TLS: CONNECT, after the TCP and TLS
    round trips and the signature) d later; admitted, the device is done after its proof (HTTP: a signature
    and a round trip) or CONNACK (a round trip); refused, it learns so then and backs off from there."""
    if transport not in ("http", "mqtts"):
        raise ValueError(f"transport must be http or mqtts, not {transport!r}")
    rng = np.random.default_rng(seed)
    burst = capacity if burst is None else burst
    n_buckets = math.ceil(horizon / dt)
    last = n_buckets - 1
    levels = max_retries + 1
    pending = np.zeros((n_buckets, levels), dtype=np.int64)  # attempts that start in a bucket, by retry number
    deciding = np.zeros((n_buckets, levels), dtype=np.int64)  # attempts whose request reaches the hub's decision
    done = np.zeros(n_buckets + 1, dtype=np.int64)  # admitted devices that are done, by bucket
    device_delta = np.zeros(n_buckets + 1, dtype=np.int64)  # +1 when an attempt starts, -1 when it ends
    hub_delta = np.zeros(n_buckets + 1, dtype=np.int64)  # the hub's hold: challenge or handshake
    started = np.zeros(n_buckets, dtype=np.int64)
    if spread > 0:
        np.add.at(pending[:, 0], _bins(0, rng.uniform(0, spread, devices), dt, last), 1)
    else:
        pending[0, 0] = devices
    rtt, sign = profile.network.sample, profile.devices.sample
    tokens = burst
    decided = attempts = refusals = 0
    peak_rate = 0.0
    end = n_buckets
    for b in range(n_buckets):
        tokens = min(burst, tokens + capacity * dt)
        counts = pending[b]
        n = int(counts.sum())
        if attempt_rate is not None and n > attempt_rate * dt and b < last:
            slots = max(1, int(attempt_rate * dt))
            now_counts = rng.multivariate_hypergeometric(counts, slots)
            pending[b + 1] += counts - now_counts
            counts, n = now_counts, slots
        if n:
            attempts += n
            started[b] = n
            device_delta[b] += n
            for level in np.flatnonzero(counts):
                m = int(counts[level])
                if transport == "mqtts":
                    connect = rtt(m, rng)
                    arrive = connect + rtt(m, rng) + sign(m, rng)
                    np.add.at(hub_delta, _bins(b, connect, dt, last), 1)
                    np.add.at(hub_delta, _bins(b, arrive, dt, last), -1)
                else:
                    arrive = rtt(m, rng)
                np.add.at(deciding[:, level], _bins(b, arrive, dt, last), 1)
        counts = deciding[b]
        n = int(counts.sum())
        if n:
            k = min(n, int(tokens))
            tokens -= k
            decided += k
            peak_rate = max(peak_rate, k / dt)
            if k:
                after = rtt(k, rng) if transport == "mqtts" else sign(k, rng) + rtt(k, rng)
                finish = _bins(b, after, dt, last)
                np.add.at(done, finish, 1)
                np.add.at(device_delta, finish, -1)
                if transport == "http":  # the challenge is held from its issue to its proof
                    hub_delta[b] += k
                    np.add.at(hub_delta, finish, -1)
            if k < n:
                refused = counts - rng.multivariate_hypergeometric(counts, k)
                refusals += n - k
                for level in np.flatnonzero(refused):
                    m = int(refused[level])
                    learn = rtt(m, rng) if transport == "mqtts" else np.zeros(m)
                    np.add.at(device_delta, _bins(b, learn, dt, last), -1)
                    delays = np.maximum(backoff(np.full(m, level + 1), np.zeros(m), rng), dt) + learn
                    retry = min(level + 1, max_retries)
                    np.add.at(pending[:, retry], _bins(b + 1, delays, dt, last), 1)
        if decided == devices and b >= last_finish(done, b):
            end = b + 1
            break
    admitted_curve = np.cumsum(done[:end])
    admitted = int(admitted_curve[-1]) if end else 0
    finished = np.flatnonzero(done[:end])
    curve_t = (np.arange(end) + 1) * dt
    return StormResult(
        devices,
        admitted,
        float(curve_t[finished[-1]]) if admitted == devices and finished.size else math.inf,
        attempts,
        refusals,
        peak_rate * (latency + profile.hub_holds_seconds()),
        curve_t,
        admitted_curve,
        curve_in_flight=np.cumsum(device_delta[:end]),
        curve_hub_in_flight=np.cumsum(hub_delta[:end]),
        curve_started=started[:end],
    )


def last_finish(done: np.ndarray, b: int) -> int:
    """The last bucket in which an admitted device is still to finish (``b`` when none is)."""
    ahead = np.flatnonzero(done[b:])
    return b + int(ahead[-1]) if ahead.size else b


__all__ = ["USL", "Backoff", "StormResult", "fit_usl", "simulate_storm"]
