"""The knee search as a schedule written while it runs: a ramp of rates, each for whole seconds, until a
step breaks; then a refinement between the last rate that held and the one that broke; then a short
closed-loop step at saturation (the ceiling); then the stop. No input but the steps judged so far, so it
is tested without a swarm.

The runner asks for the next entry a little before the current one ends, with the current step judged on
the whole seconds it has so far; the entry starts exactly when the current one ends. After a step that
broke, the swarm first settles (no new arrivals, about one p99 long, measured by no step) so the next step
does not inherit the broken one's queue; otherwise the load never pauses and every second of the search
belongs to some step. Connection slots (what bounds the swarm's
concurrency) never shrink and cover each rate for twice the highest p99 seen, so a slow handshake does
not make the swarm fall behind a rate the target could take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from certstorm.capacity import analysis

__all__ = ["Search", "SearchSettings"]


@dataclass(frozen=True)
class SearchSettings:
    start: float = 500.0  # the ramp's first rate, authentications/s
    add: float = 500.0  # added per ramp step
    step_s: int = 5  # seconds per step
    bound_s: float = 80.0  # the whole search: ramp, refinement and ceiling
    slo_ms: float = 500.0
    refine_steps: int = 3
    ceiling_s: int = 10  # the closed-loop step at saturation (0: none)
    ceiling_slots: int = 40  # connection slots the closed-loop step keeps busy
    latency_budget: float = 0.05  # slots per rate: a slot per authentication this long in flight, at least
    min_slots: int = 10


class Search:
    """The schedule of one search: ``entries`` so far, each ``{"at", "rate", "users", "phase", "stage"}``,
    the last ``{"at", "stop": True}``; ``why_stopped`` says what ended it."""

    def __init__(self, settings: SearchSettings, begin_at: int):
        self.s = settings
        self.begin_at = begin_at
        self.entries: list[dict] = []
        self.plan: list[tuple[str, float | None]] = []  # (stage, rate) still to run after the current entry
        self.retried: set[float] = set()
        self.why_stopped = ""
        self.latency_s = 0.0  # the highest p99 seen: slots must cover rate x latency (Little's law)
        self.settle_s = 0  # owed before the next measured step: the one just judged broke
        self.late_breaks: dict[int, list[str]] = {}  # ramp steps (by phase) found broken on all their seconds
        self._add("ramp", settings.start)

    def record(self, entry: dict, judged: dict) -> None:
        """An earlier step judged on all its seconds. The ramp moves up from a step judged on its first
        seconds; a ramp step that broke in its last ones still bounds the refinement from above. A step the
        search already tried again at the same rate is judged by that retry, not here."""
        later = self.entries[entry["phase"] + 1 :]
        moved_up = bool(later) and later[0].get("stage") == "ramp" and later[0]["rate"] > entry["rate"]
        why = analysis.reasons(judged, self.s.slo_ms) if moved_up else []  # a retry answers for itself
        if entry.get("stage") == "ramp" and why:
            self.late_breaks[entry["phase"]] = why

    # -- the schedule ---------------------------------------------------------------------------------------
    @property
    def current(self) -> dict:
        return self.entries[-1]

    @property
    def ends_at(self) -> int:
        """When the current entry ends, and the next must start."""
        e = self.current
        if e["stage"] == "settle":
            return e["at"] + e["seconds"]
        return e["at"] + (self.s.ceiling_s if e["stage"] == "ceiling" else self.s.step_s)

    @property
    def stopped(self) -> bool:
        return bool(self.entries) and self.entries[-1].get("stop", False)

    def _users(self, rate: float | None) -> int:
        previous = self.entries[-1]["users"] if self.entries and not self.entries[-1].get("stop") else 0
        if rate is None:
            return max(previous, self.s.ceiling_slots)
        budget = max(self.s.latency_budget, 2.0 * self.latency_s)
        return max(previous, self.s.min_slots, math.ceil(rate * budget))

    def _add(self, stage: str, rate: float | None) -> dict:
        if self.settle_s:
            settle = {"at": self.ends_at, "rate": 0.0, "users": self.current["users"], "phase": len(self.entries)}
            self.entries.append(dict(settle, stage="settle", seconds=self.settle_s))
            self.settle_s = 0
        at = self.ends_at if self.entries else self.begin_at
        entry = {"at": at, "rate": rate, "users": self._users(rate), "phase": len(self.entries), "stage": stage}
        self.entries.append(entry)
        return entry

    def _stop(self, why: str) -> dict:
        self.why_stopped = why
        self.settle_s = 0
        entry = {"at": self.ends_at, "stop": True}
        self.entries.append(entry)
        return entry

    def _time_left(self, needed_s: float) -> bool:
        return self.ends_at + self.settle_s + needed_s <= self.begin_at + self.s.bound_s

    def _settle_after(self, judged: dict) -> int:
        """Whole seconds for a broken step's queue to drain: its p99, from one second to one step."""
        p99_s = judged["p99"] / 1000.0 if judged.get("p99") is not None else self.s.step_s
        return int(min(self.s.step_s, max(1, math.ceil(p99_s))))

    def _finish(self, why: str) -> dict:
        """The ceiling, if there is time for it, then the stop."""
        if self.s.ceiling_s and not self._time_left(self.s.ceiling_s):
            # the ceiling is closed-loop (each user waits for its answer), so a queue left over only delays
            # its users: a settle shortens to what the bound leaves rather than cost the ceiling
            spare = self.begin_at + self.s.bound_s - self.ends_at - self.s.ceiling_s
            self.settle_s = max(0, min(self.settle_s, int(spare)))
        self.plan = [("ceiling", None)] if self.s.ceiling_s and self._time_left(self.s.ceiling_s) else []
        self.why_stopped = self.why_stopped or why
        return self._next_planned() or self._stop(self.why_stopped)

    def _next_planned(self) -> dict | None:
        if not self.plan:
            return None
        stage, rate = self.plan.pop(0)
        return self._add(stage, rate)

    # -- decisions ------------------------------------------------------------------------------------------
    def next(self, judged: dict | None) -> dict:
        """The entry that starts when the current one ends, given the current step as judged so far (None
        when none of its seconds is in yet: it is taken to hold)."""
        if self.stopped:
            return self.current
        if judged is not None and judged.get("p99") is not None:
            self.latency_s = max(self.latency_s, judged["p99"] / 1000.0)
        stage = self.current["stage"]
        if stage == "ceiling":
            return self._stop(self.why_stopped or "the search ended")
        if judged is not None and judged["achieved"] == 0 and judged["error_rate"] > 0:
            return self._stop("the target refused every authentication")
        if judged is not None and analysis.reasons(judged, self.s.slo_ms):
            self.settle_s = self._settle_after(judged)
        planned = self._next_planned()
        if planned is not None:
            return planned
        if stage == "refine":
            return self._finish("the refinement ended")
        why = analysis.reasons(judged, self.s.slo_ms) if judged else []
        rate = self.current["rate"]
        ramp = [e for e in self.entries if e.get("stage") == "ramp" and e is not self.current]
        late = [e for e in ramp if e["phase"] in self.late_breaks]
        if late and min(e["rate"] for e in late) <= rate:  # a step below broke after the ramp left it
            lowest = min(late, key=lambda e: e["rate"])
            rate, why = lowest["rate"], self.late_breaks[lowest["phase"]]
        reserve = self.s.refine_steps * self.s.step_s + self.s.ceiling_s
        if not why:
            if self._time_left(self.s.step_s + reserve):
                return self._add("ramp", rate + self.s.add)
            return self._finish("the time bound ended the ramp before any step broke")
        neither = judged is not None and analysis.side_of(judged) == "neither" and not late
        if neither and rate not in self.retried and self._time_left(self.s.step_s):
            # neither side saturated: on a shared machine that is often a noisy second, not a knee
            self.retried.add(rate)
            return self._add("ramp", rate)
        held = [e["rate"] for e in ramp if e["rate"] < rate and e["phase"] not in self.late_breaks]
        good = max(held, default=0.0)
        gap = rate - good
        n = self.s.refine_steps
        self.why_stopped = f"{rate:,.0f}/s broke ({', '.join(why)})"
        self.plan = [("refine", good + gap * i / (n + 1)) for i in range(1, n + 1)]
        while self.plan and not self._time_left(len(self.plan) * self.s.step_s + self.s.ceiling_s):  # ceiling kept
            self.plan.pop()
        return self._next_planned() or self._finish(self.why_stopped)
