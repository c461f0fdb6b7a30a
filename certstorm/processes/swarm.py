"""The swarm as a subprocess: ``locust -f loadgen`` headless, started and stopped as a process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["newest_summary", "start_swarm", "stop_swarm"]


def start_swarm(args: list[str], log: Path) -> subprocess.Popen:
    """The swarm as its own process, from wherever the loadgen package is installed."""
    from loadgen import SWARM_DIR as swarm

    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(swarm),
        "--headless",
        "--only-summary",
        "--exit-code-on-error",
        "0",
        *args,
    ]
    out = open(log, "wb")
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=swarm.parent, start_new_session=True
    )


def stop_swarm(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def newest_summary(directory: Path) -> dict | None:
    found = sorted(directory.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None
