"""The device queue of the storm and churn shapes."""

from __future__ import annotations

import heapq
import random
from itertools import count

__all__ = ["DeviceQueue"]


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
