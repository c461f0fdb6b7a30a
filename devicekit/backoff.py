"""Reconnect backoff presets of real device SDKs, for the swarm's storm shape and the storm simulator.

Each preset answers "a device's connection attempt was refused (HTTP 429, a 5xx, or a connection error);
how long until it tries again?" in two forms that share one formula: :meth:`Backoff.delay`, one device
at wall-clock time ``now`` (the swarm), and :meth:`Backoff.vectorized`, a callable ``(retry_numbers,
previous_delays, rng) -> delays`` over numpy arrays (:func:`certstorm.capacity.planner.simulate_storm`).
``retry`` counts from 1: the first retry follows the first refusal. The presets' formulas, each from its
SDK's source, are tabled in docs/design.md ("Reconnect backoff presets").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Backoff:
    name: str
    description: str
    kind: str  # azure-c | dotnet | full-jitter | none | exponential
    base: float = 1.0  # seconds
    cap: float = math.inf  # seconds
    jitter: float = 0.0  # azure-c: max jitter fraction; dotnet: +-20 % is built in
    delta: float = 0.0  # dotnet delta, seconds
    throttle: tuple[float, float, float] | None = None  # dotnet (min, max, delta) on 429
    min_after_immediate: float = 0.0  # dotnet: >= 1 s after a connection error
    give_up_after: float | None = None  # seconds after the first attempt

    # -- one device ----------------------------------------------------------------------------------------
    def delay(
        self,
        retry: int,
        *,
        now: float,
        throttled: bool = False,
        connection_error: bool = False,
        previous: float = 0.0,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds from ``now`` until retry number ``retry`` (>= 1)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        r = (rng or random).random
        k = self.kind
        if k == "none":
            return 0.0
        if k == "exponential":
            return min(self.base * 2.0 ** min(retry - 1, 62), self.cap)
        if k == "full-jitter":
            return r() * min(self.base * 2.0 ** min(retry - 1, 62), self.cap)
        if k == "azure-c":
            if retry == 1:
                return 0.0
            wait = math.floor(2.0 ** min(retry - 2, 62) * self.base * (1.0 + self.jitter * r()))
            return max(0.0, math.floor(now) + wait - now)
        if k == "dotnet":
            lo, hi, delta = self.throttle if (throttled and self.throttle) else (self.base, self.cap, self.delta)
            d = min(lo + (2.0 ** min(retry - 1, 62) - 1.0) * delta * (0.8 + 0.4 * r()), hi)
            if connection_error:
                d = max(d, self.min_after_immediate)
            return d
        raise ValueError(f"unknown backoff kind {k!r}")

    def gives_up(self, first_attempt: float, now: float) -> bool:
        return self.give_up_after is not None and now - first_attempt >= self.give_up_after

    # -- many devices at once (certstorm.capacity.planner.simulate_storm) ----------------------------------------
    def vectorized(self, *, throttled: bool = True):
        """``(retry_numbers, previous_delays, rng) -> delays`` over arrays; refusals count as throttling.

        ``azure-c`` drops the whole-second clock alignment here (a simulator has no wall clock): the
        wait is the integer number of seconds the SDK computes.
        """

        def backoff(retries: np.ndarray, previous: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            k = np.minimum(np.asarray(retries, dtype=np.float64), 63.0)
            u = rng.random(k.shape)
            if self.kind == "none":
                return np.zeros(k.shape)
            if self.kind == "exponential":
                return np.minimum(self.base * 2.0 ** (k - 1), self.cap)
            if self.kind == "full-jitter":
                return u * np.minimum(self.base * 2.0 ** (k - 1), self.cap)
            if self.kind == "azure-c":
                wait = np.floor(2.0 ** np.maximum(k - 2, 0) * self.base * (1.0 + self.jitter * u))
                return np.where(k <= 1, 0.0, wait)
            if self.kind == "dotnet":
                lo, hi, delta = self.throttle if (throttled and self.throttle) else (self.base, self.cap, self.delta)
                return np.minimum(lo + (2.0 ** (k - 1) - 1.0) * delta * (0.8 + 0.4 * u), hi)
            raise ValueError(f"unknown backoff kind {self.kind!r}")

        backoff.__name__ = f"backoff_{self.name.replace('-', '_')}"
        return backoff

    def bounds(self, retry: int, *, throttled: bool = False) -> tuple[float, float]:
        """The smallest and largest delay retry number ``retry`` can get (ignoring clock alignment)."""
        k = self.kind
        if k == "none":
            return 0.0, 0.0
        if k == "exponential":
            d = min(self.base * 2.0 ** (retry - 1), self.cap)
            return d, d
        if k == "full-jitter":
            return 0.0, min(self.base * 2.0 ** (retry - 1), self.cap)
        if k == "azure-c":
            if retry == 1:
                return 0.0, 0.0
            w = 2.0 ** (retry - 2) * self.base
            return float(math.floor(w)), float(math.floor(w * (1 + self.jitter)))
        lo, hi, delta = self.throttle if (throttled and self.throttle) else (self.base, self.cap, self.delta)
        m = 2.0 ** (retry - 1) - 1.0
        return min(lo + m * delta * 0.8, hi), min(lo + m * delta * 1.2, hi)


PRESETS: dict[str, Backoff] = {
    "azure-c": Backoff(
        "azure-c",
        "Azure IoT C SDK: immediate, then 1 s doubling, +0-5 % jitter, whole seconds",
        "azure-c",
        base=1.0,
        jitter=0.05,
    ),
    "azure-c-100": Backoff(
        "azure-c-100", "Azure IoT C SDK formula with 0-100 % jitter", "azure-c", base=1.0, jitter=1.0
    ),
    "azure-dotnet": Backoff(
        "azure-dotnet",
        "Azure IoT .NET SDK: 100 ms..10 s (10..60 s when throttled), gives up after 4 min",
        "dotnet",
        base=0.1,
        cap=10.0,
        delta=0.1,
        throttle=(10.0, 60.0, 5.0),
        min_after_immediate=1.0,
        give_up_after=240.0,
    ),
    "aws-crt": Backoff(
        "aws-crt", "AWS CRT MQTT5: full jitter, 1 s doubling up to 120 s", "full-jitter", base=1.0, cap=120.0
    ),
    "none": Backoff("none", "retry at once", "none"),
    "exponential": Backoff("exponential", "1 s doubling up to 60 s, no jitter", "exponential", base=1.0, cap=60.0),
}


def preset(name: str) -> Backoff:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown backoff preset {name!r}; choose one of {', '.join(PRESETS)}") from None


__all__ = ["PRESETS", "Backoff", "preset"]
