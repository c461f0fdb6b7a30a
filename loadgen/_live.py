"""The swarm's figures second by second, while the run goes on, for a runner that judges steps live
(``--live-file``, JSON lines).

Every process with connection slots reports, just after each whole second, the seconds that have ended:
authentications intended, admitted and failed, retries, its own CPU seconds, and the latencies of the
admissions that ended in that second as sparse histogram buckets. Workers send them to the master; the
master (or a lone process) appends them to the file with the workers' arrivals (their certstorm
version), readiness and losses. Records::

    {"kind": "hello", "worker", "version", "host", "pid", "t"}      a worker connected
    {"kind": "ready", "worker", "devices", "t"}                     it opened its fleet and took the plan
    {"kind": "second", "worker", "second", "intended", "admitted", "failed", "retries", "cpu_s", "lat"}
    {"kind": "missing", "worker", "t"}                              the master lost it
    {"kind": "error", "message", "t"}                               the run cannot go on
"""

from __future__ import annotations

import json
import os
import socket
import time
from importlib.metadata import PackageNotFoundError, version

import gevent

__all__ = ["VERSION", "LiveFile", "hello", "report_seconds"]

try:
    VERSION = version("certstorm")  # a worker of another version is refused by the master
except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
    VERSION = "0+unknown"

OFFSET = 0.02  # report this long after each whole second: the second's admissions are all recorded by then


class LiveFile:
    """The JSON-lines file a master or lone process appends to; a line is written whole, then flushed."""

    def __init__(self, path: str | None):
        self._file = open(path, "a", buffering=1) if path else None  # open for the whole run

    def write(self, *records: dict) -> None:
        if self._file is not None:
            for record in records:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def hello(worker: int) -> dict:
    return {
        "kind": "hello",
        "worker": worker,
        "version": VERSION,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "t": time.time(),
    }


def report_seconds(recorder_of, worker_of, send) -> None:
    """Forever: just after each whole second, ``send`` the records of the seconds that ended (the
    recorder comes from ``recorder_of()``, None before the run's plan arrives). CPU seconds of the
    process since the last report are spread evenly over the seconds reported."""
    last_cpu = time.process_time()
    while True:
        now = time.time()
        gevent.sleep(int(now) + 1 + OFFSET - now)
        recorder = recorder_of()
        cpu = time.process_time()
        if recorder is None:
            last_cpu = cpu
            continue
        seconds = recorder.ended_seconds(int(time.time()))
        if not seconds:
            continue
        share = (cpu - last_cpu) / len(seconds)
        last_cpu = cpu
        worker = worker_of()
        send([dict(row, kind="second", worker=worker, cpu_s=round(share, 6)) for row in seconds])
