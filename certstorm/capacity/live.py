"""The swarm's live file, read while the run goes on (the records :mod:`loadgen._live` writes): which
workers joined, are ready, went missing or refused the run, and every worker's figures per second."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["LiveLog"]


class LiveLog:
    """What the live file says so far; :meth:`read` takes the lines added since the last call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.workers: dict[int, dict] = {}  # worker -> {"hello": record, "ready": t, "missing": t}
        self.errors: list[str] = []
        self.seconds: dict[int, dict[int, dict]] = {}  # epoch second -> worker -> record

    def read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line still being written
        for line in lines:
            if line.strip():
                self._take(json.loads(line))

    def _take(self, record: dict) -> None:
        kind = record.get("kind")
        if kind == "second":
            self.seconds.setdefault(record["second"], {})[record["worker"]] = record
        elif kind == "error":
            self.errors.append(record["message"])
        elif kind in ("hello", "ready", "missing"):
            worker = self.workers.setdefault(record["worker"], {})
            worker[kind] = record if kind == "hello" else record["t"]

    def ready(self) -> list[int]:
        return sorted(w for w, state in self.workers.items() if "ready" in state and "missing" not in state)

    def missing(self) -> dict[int, float]:
        return {w: state["missing"] for w, state in self.workers.items() if "missing" in state}

    def complete_until(self) -> int:
        """The first second not yet reported by every worker that is ready and not missing."""
        live = set(self.ready())
        second = min(self.seconds, default=0)
        while live and live <= set(self.seconds.get(second, {})):
            second += 1
        return second

    def rows(self) -> list[dict]:
        """Every reported second in order: ``{"second", "workers": {worker: record}}``."""
        return [{"second": s, "workers": self.seconds[s]} for s in sorted(self.seconds)]
