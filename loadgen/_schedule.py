"""The follow shape's schedule: the rates a runner sets while the run goes on, in a JSON file it rewrites
(``--schedule-file``, ``{"entries": [...]}``, each entry as :class:`loadgen._shapes.Follow` describes).

The master (or a lone process) reads the file a few times a second and hands new entries to the workers;
every process applies each entry at its ``at`` itself, so a rate changes on every generator host at the
same instant rather than when a message happens to arrive.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import gevent

__all__ = ["Schedule"]

log = logging.getLogger("certstorm.swarm")

POLL = 0.1  # seconds between reads of the schedule file


class Schedule:
    """The entries known so far, in order of ``at``, and the applier that puts them in force."""

    def __init__(self):
        self.entries: list[dict] = []

    def __call__(self) -> list[dict]:
        return self.entries

    def update(self, entries: list[dict]) -> bool:
        """Take a newer list of entries; True when it changed."""
        entries = sorted(entries, key=lambda e: e["at"])
        if entries == self.entries:
            return False
        self.entries = entries
        return True

    def follow_file(self, path: str, on_change) -> None:
        """Read ``path`` until the run stops; ``on_change(entries)`` after each change. A file that does not
        parse (a runner writes it by renaming a complete one, so this is a foreign writer) is skipped."""
        file, stamp = Path(path), None
        while True:
            try:
                now = file.stat().st_mtime_ns
                if now != stamp:
                    stamp = now
                    entries = json.loads(file.read_text()).get("entries", [])
                    if self.update(entries):
                        on_change(self.entries)
            except FileNotFoundError:
                pass
            except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
                log.warning("schedule file %s not read: %s", path, exc)
            gevent.sleep(POLL)

    def apply(self, set_pace, stop) -> None:
        """Put each entry in force at its ``at``: ``set_pace(rate, users, phase)``, or ``stop()`` for the
        stop entry. Runs until the stop."""
        done = 0.0  # the ``at`` of the last entry applied
        while True:
            now = time.time()
            due = [e for e in self.entries if done < e["at"] <= now]
            for entry in due:
                done = entry["at"]
                if entry.get("stop"):
                    stop()
                    return
                set_pace(entry["rate"], entry.get("users") or 1, entry.get("phase", 0))
            upcoming = [e["at"] for e in self.entries if e["at"] > now]
            gevent.sleep(min(POLL, max(0.0, min(upcoming) - time.time())) if upcoming else POLL)
