"""One knee search against one target, as one swarm run: the swarm follows the schedule the search writes
while it runs, reporting every second; the target's CPU is read just after every second; the steps are cut
from those seconds when the swarm has stopped."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from certstorm.capacity.live import LiveLog
from certstorm.capacity.sampler import SecondSampler
from certstorm.capacity.search import Search, SearchSettings
from certstorm.capacity.windows import cut_steps
from certstorm.processes import SwarmGroup

__all__ = ["LEAD", "SearchFailed", "SearchResult", "drive_search"]

LEAD = 1.5  # seconds before a step ends that the next entry is decided and written
POLL = 0.1


class SearchFailed(RuntimeError):
    """The search could not run: the message says why and what to do."""


@dataclass
class SearchResult:
    schedule: list[dict]
    seconds: list[dict]
    samples: list[dict]
    steps: list[dict]
    workers: dict[int, dict]
    lost: dict[int, float]
    why_stopped: str
    started_at: float  # the swarm processes were started
    first_at: float | None  # the first step began
    stop_at: float | None
    refused: bool = False
    notes: list[str] = field(default_factory=list)


def _write_schedule(path: Path, entries: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entries": entries}))
    os.replace(tmp, path)  # the swarm reads whole files only


def _judge(entry: dict, end: float, live: LiveLog, samples: list[dict], segment: dict, origin: float) -> dict | None:
    """``entry`` judged on its whole seconds before ``end`` that every ready worker has reported so far."""
    upto = min(live.complete_until(), end)
    if upto <= entry["at"]:
        return None
    steps = cut_steps(
        [entry, {"at": upto, "stop": True}],
        live.rows(),
        samples,
        segment=segment["name"],
        workers=segment.get("workers"),
        target_cores=segment.get("target_cores"),
        machine_cores=segment["machine_cores"],
        origin=origin,
    )
    return steps[0] if steps else None


def _record_finished(search: Search, recorded: set, live: LiveLog, samples, segment: dict, origin: float) -> None:
    """Hand the search each ramp step judged on all its seconds, once: it moved on after their first ones."""
    for entry, after in zip(search.entries, search.entries[1:]):
        if entry.get("stage") != "ramp" or entry["phase"] in recorded or live.complete_until() < after["at"]:
            continue
        recorded.add(entry["phase"])
        judged = _judge(entry, after["at"], live, samples, segment, origin)
        if judged is not None:
            search.record(entry, judged)


def drive_search(
    group: SwarmGroup,
    schedule_path: Path,
    live_path: Path,
    sampler: SecondSampler,
    settings: SearchSettings,
    segment: dict,
    *,
    expected: int,
    ready_timeout: float,
    origin: float,
    say,
) -> SearchResult:
    """Start the swarm, wait (bounded) for ``expected`` ready processes, run the search, stop, and cut the
    steps. ``segment``: ``{"name", "workers", "target_cores", "machine_cores"}``."""
    live = LiveLog(live_path)
    started = time.time()
    group.start()
    deadline = started + ready_timeout
    while len(live.ready()) < expected:
        live.read()
        if live.errors:
            raise SearchFailed(live.errors[0])
        if not group.running():
            raise SearchFailed(
                f"the swarm ended before {expected} generator process(es) were ready ({len(live.ready())} were)"
            )
        if time.time() > deadline:
            raise SearchFailed(
                f"waited {ready_timeout:.0f} s for {expected} generator process(es) to be ready; "
                f"{len(live.ready())} were"
            )
        time.sleep(POLL)
    begin = int(time.time()) + 2  # whole seconds, with time for the schedule to reach every process
    search = Search(settings, begin)
    _write_schedule(schedule_path, search.entries)
    say(f"  {len(live.ready())} generator process(es) ready; the first step at {settings.start:,.0f}/s begins")
    refused = False
    recorded: set[int] = set()
    while True:
        live.read()
        if live.errors:
            raise SearchFailed(live.errors[0])
        now = time.time()
        if search.stopped:
            if now > search.current["at"] + 2 or not group.running():
                break
        elif not group.running():
            break
        elif now >= search.ends_at - LEAD:
            _record_finished(search, recorded, live, sampler.samples, segment, origin)
            judged = _judge(search.current, search.ends_at, live, sampler.samples, segment, origin)
            previous = search.current
            entry = search.next(judged)
            _write_schedule(schedule_path, search.entries)
            if judged is not None:
                target = "closed loop" if previous["rate"] is None else f"{previous['rate']:,.0f}/s"
                say(
                    f"  {previous['stage']} {target}: admitted {judged['achieved']:,.0f}/s so far"
                    + (f", target CPU {judged['target_cpu']:.0%}" if judged["target_cpu"] is not None else "")
                    + f", busiest generator {judged['gen_cpu']:.0%}"
                )
            settle = search.entries[-2] if len(search.entries) > 1 else {}
            if settle.get("stage") == "settle":  # added just now, before the next measured step
                say(f"  settling {settle['seconds']} s: no new arrivals while the broken step's queue drains")
            if entry.get("stop"):
                refused = search.why_stopped.startswith("the target refused")
                say(f"  stopping: {search.why_stopped}")
        time.sleep(POLL)
    group.wait(30)
    group.stop()
    live.read()
    stop_at = search.current["at"] if search.stopped else None
    steps = cut_steps(
        search.entries if search.stopped else [*search.entries, {"at": int(time.time()), "stop": True}],
        live.rows(),
        sampler.samples,
        segment=segment["name"],
        workers=segment.get("workers"),
        target_cores=segment.get("target_cores"),
        machine_cores=segment["machine_cores"],
        origin=origin,
        expected=set(live.ready()) | set(live.missing()),
    )
    return SearchResult(
        schedule=search.entries,
        seconds=live.rows(),
        samples=list(sampler.samples),
        steps=steps,
        workers=live.workers,
        lost=live.missing(),
        why_stopped=search.why_stopped,
        started_at=started,
        first_at=search.begin_at,
        stop_at=stop_at,
        refused=refused,
    )
