"""The swarm's load shapes as plain schedules: ``tick(t, done) -> Plan | None``, no Locust, no sockets.

Locust uses the first ``LoadTestShape`` it finds in a locustfile, silently, so ``swarm.py`` exposes exactly
one: a dispatcher that builds the schedule named by ``--shape`` and asks it what to do each second. The
schedules live here so they can be tested without a runner.

A :class:`Plan` says how many connection slots (Locust users) to run, how fast to start them, and -- for
the paced shapes -- the target rate of authentications per second that the slots' arrival schedules
share. ``tick`` returns ``None`` when the shape is over; ``done`` tells it the workers have run out of
devices (storm: every device admitted or given up; a limited number of passes finished).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("closed", "steady", "step", "storm", "churn", "follow")
SPAWN_AHEAD = 1.5  # seconds: slots for a scheduled rate are started this long before it holds


@dataclass(frozen=True)
class Plan:
    users: int
    spawn_rate: float
    rate: float | None = None  # target authentications/s for the whole swarm (paced shapes)
    phase: int = 0  # step number (step shape), else 0


def slots_for(rate: float, latency_budget: float, minimum: int = 1) -> int:
    """Little's law: slots needed so that ``rate`` arrivals/s with up to ``latency_budget`` s in flight
    each never wait for a free slot."""
    return max(minimum, math.ceil(rate * latency_budget))


class Shape:
    name = "shape"
    duration: float | None = None
    self_paced = False  # True: the processes set their pace themselves (follow), not from the tick

    def tick(self, t: float, done: bool = False) -> Plan | None:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def phases(self) -> list[dict]:
        """Named intervals for per-phase reporting: [{"phase", "start", "end", "rate"}]."""
        return [{"phase": 0, "start": 0.0, "end": self.duration, "rate": None}]


class Closed(Shape):
    """Locust's own closed model: ``users`` slots authenticate back to back (``-u``, ``-r``, ``-t``)."""

    name = "closed"

    def __init__(self, users: int, spawn_rate: float, duration: float | None):
        if users < 1 or spawn_rate <= 0:
            raise ValueError("closed shape needs users >= 1 and a positive spawn rate")
        self.users, self.spawn_rate, self.duration = users, spawn_rate, duration

    def tick(self, t, done=False):
        if done or (self.duration is not None and t >= self.duration):
            return None
        return Plan(self.users, self.spawn_rate)


class Steady(Shape):
    """A constant target rate, paced by per-slot arrival schedules (open model as far as slots allow)."""

    name = "steady"

    def __init__(self, rate: float, duration: float, slots: int):
        if rate <= 0 or duration <= 0 or slots < 1:
            raise ValueError("steady shape needs a positive rate and duration and at least one slot")
        self.rate, self.duration, self.slots = rate, duration, slots

    def tick(self, t, done=False):
        if done or t >= self.duration:
            return None
        return Plan(self.slots, float(self.slots), self.rate)

    def phases(self):
        return [{"phase": 0, "start": 0.0, "end": self.duration, "rate": self.rate}]


class Step(Shape):
    """Stairs: ``start_rate``, then ``+step_rate`` every ``step_seconds``, for ``steps`` steps."""

    name = "step"

    def __init__(
        self,
        start_rate: float,
        step_rate: float,
        step_seconds: float,
        steps: int,
        latency_budget: float,
        slots: int | None = None,
    ):
        if start_rate <= 0 or step_rate < 0 or step_seconds <= 0 or steps < 1:
            raise ValueError("step shape needs start rate > 0, step rate >= 0, step seconds > 0, steps >= 1")
        self.start_rate, self.step_rate, self.step_seconds, self.steps = start_rate, step_rate, step_seconds, steps
        self.latency_budget = latency_budget
        self.slots = slots
        self.duration = steps * step_seconds

    def rate_at(self, step: int) -> float:
        return self.start_rate + step * self.step_rate

    def users_at(self, step: int) -> int:
        return self.slots or slots_for(self.rate_at(step), self.latency_budget)

    def tick(self, t, done=False):
        if done or t >= self.duration:
            return None
        step = min(int(t // self.step_seconds), self.steps - 1)
        users = self.users_at(step)
        return Plan(users, float(users), self.rate_at(step), step)

    def phases(self):
        return [
            {"phase": i, "start": i * self.step_seconds, "end": (i + 1) * self.step_seconds, "rate": self.rate_at(i)}
            for i in range(self.steps)
        ]


class Storm(Shape):
    """``devices`` try to connect at once after an outage; ``slots`` connections carry their attempts.
    Ends when every device is admitted or has given up (``done``), or after ``timeout`` seconds."""

    name = "storm"

    def __init__(self, devices: int, slots: int, timeout: float):
        if devices < 1 or slots < 1 or timeout <= 0:
            raise ValueError("storm shape needs devices >= 1, slots >= 1 and a positive timeout")
        self.devices, self.slots, self.timeout = devices, slots, timeout
        self.duration = timeout

    def tick(self, t, done=False):
        if done or t >= self.timeout:
            return None
        return Plan(self.slots, float(self.slots))


class Churn(Shape):
    """``devices`` connect, stay online ~``stay`` s, disconnect, come back after ~``away`` s, for
    ``duration`` seconds."""

    name = "churn"

    def __init__(self, devices: int, slots: int, duration: float, stay: float, away: float):
        if devices < 1 or slots < 1 or duration <= 0 or stay < 0 or away < 0:
            raise ValueError("churn shape needs devices >= 1, slots >= 1, a positive duration, stay/away >= 0")
        self.devices, self.slots, self.duration, self.stay, self.away = devices, slots, duration, stay, away

    def tick(self, t, done=False):
        if done or t >= self.duration:
            return None
        return Plan(self.slots, float(self.slots))


class Follow(Shape):
    """The rates a runner sets while the run goes on: a schedule of entries ``{"at": epoch seconds, "rate":
    authentications/s (None: closed model), "users": slots, "phase": step number}`` and a final ``{"at",
    "stop": true}``. Each process applies an entry's rate at its ``at`` itself (:mod:`loadgen._schedule`);
    the shape starts the slots a little ahead and never stops any, and ends the run at the stop."""

    name = "follow"
    self_paced = True

    def __init__(self, entries, clock):
        self.entries, self.clock = entries, clock
        self.duration = None

    def tick(self, t, done=False):
        now, entries = self.clock(), self.entries()
        if any(e.get("stop") and e["at"] <= now for e in entries):
            return None
        started = [e for e in entries if e["at"] <= now and not e.get("stop")]
        coming = [e for e in entries if e["at"] <= now + SPAWN_AHEAD and not e.get("stop")]
        users = max((e.get("users") or 1 for e in coming), default=1)
        current = started[-1] if started else None
        return Plan(users, float(users), current["rate"] if current else 0.0, current["phase"] if current else 0)

    def describe(self) -> dict:
        return {"entries": len(self.entries())}

    def phases(self):
        return []  # the runner that wrote the schedule cuts its steps from the live seconds


def build_shape(options, schedule=None, clock=None) -> Shape:
    """The shape named by ``options.shape`` with its parameters (a parsed Locust options namespace)."""
    name = options.shape
    run_time = getattr(options, "run_time", None) or None
    if name == "closed":
        return Closed(options.num_users or 1, options.spawn_rate or 1.0, run_time)
    if name == "steady":
        slots = options.slots or slots_for(options.rate, options.latency_budget)
        return Steady(options.rate, run_time or 60.0, slots)
    if name == "step":
        return Step(
            options.rate, options.step_rate, options.step_seconds, options.steps, options.latency_budget, options.slots
        )
    if name == "storm":
        return Storm(options.storm_devices, options.slots or min(100, options.storm_devices), run_time or 600.0)
    if name == "churn":
        return Churn(
            options.churn_devices,
            options.slots or min(50, options.churn_devices),
            run_time or 60.0,
            options.churn_stay,
            options.churn_away,
        )
    if name == "follow":
        if schedule is None:
            raise ValueError("the follow shape needs a schedule (--schedule-file)")
        return Follow(schedule, clock or (lambda: 0.0))
    raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")


__all__ = [
    "SHAPES",
    "SPAWN_AHEAD",
    "Churn",
    "Closed",
    "Follow",
    "Plan",
    "Shape",
    "Steady",
    "Step",
    "Storm",
    "build_shape",
    "slots_for",
]
