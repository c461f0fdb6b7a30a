"""Open-model arrivals for one swarm process: authentications are due at this process's share of the
swarm's target rate, whatever the connection slots are doing.

A slot takes the next due time (a ticket) and waits for it; when every slot is busy, tickets fall due
unclaimed and the next free slot starts at once, its latency still counted from the intended time
(coordinated omission is measured, not hidden). The rate changes in place: slots waiting for a ticket
drawn at the old rate wake and draw again (Poisson arrivals have no memory), so a new rate holds from
the instant it is set. A rate of ``None`` is the closed model: slots authenticate back to back.
"""

from __future__ import annotations

import random
import time

from gevent.event import Event

__all__ = ["Pacer"]

_now = time.time


class Pacer:
    """Due times of one process's authentications."""

    def __init__(self, *, poisson: bool = True, rng: random.Random | None = None):
        self.poisson = poisson
        self.rng = rng or random.Random()
        self.rate: float | None = 0.0  # this process's arrivals per second; 0 idles, None runs closed
        self.share = 1.0  # this process's part of the swarm's rate
        self._swarm_rate: float | None = 0.0  # the whole swarm's; 0 until one is given
        self._next = 0.0
        self._changed = Event()

    def pace(self, swarm_rate: float | None) -> None:
        """The whole swarm's rate (None: the closed model); this process takes its ``share`` of it."""
        self._swarm_rate = swarm_rate
        self.set_rate(None if swarm_rate is None else swarm_rate * self.share)

    def set_share(self, share: float) -> None:
        """This process's part of the swarm's rate. A rate already in force is re-paced at once: a worker
        can hear the master's first rate before the run's plan says how many processes share it."""
        self.share = share
        self.pace(self._swarm_rate)

    def set_rate(self, rate: float | None) -> None:
        """From now on, arrivals at ``rate`` per second (None: closed model, 0: none)."""
        if rate == self.rate:
            return
        self.rate = rate
        self._next = _now() + self._gap() if rate else 0.0
        changed, self._changed = self._changed, Event()
        changed.set()  # slots waiting on a ticket of the old rate draw again

    def _gap(self) -> float:
        mean = 1.0 / self.rate
        return self.rng.expovariate(self.rate) if self.poisson else mean

    def take(self, stopping) -> float | None:
        """Wait for the next due time and return it; None in the closed model (no pacing), or when
        ``stopping()`` says the slot should stop."""
        while not stopping():
            rate, changed = self.rate, self._changed
            if rate is None:
                return None
            if rate <= 0:
                changed.wait(0.25)
                continue
            due = self._next
            self._next = due + self._gap()
            delay = due - _now()
            if delay <= 0:
                return due
            if not changed.wait(delay) or self.rate == rate:
                if stopping():
                    return None
                return due
        return None
