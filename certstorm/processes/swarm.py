"""The swarm as subprocesses: ``locust -f loadgen`` headless, alone or as a master with local workers
(remote workers join the master by themselves), each started and stopped as a process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["SwarmGroup", "newest_summary", "start_swarm", "stop_swarm", "worker_command"]


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


def worker_command(master_host: str, master_port: int) -> str:
    """What a generator host runs to join a run's swarm: the master hands it the fleet and the target."""
    return f"certstorm swarm --worker --master-host {master_host} --master-port {master_port}"


class SwarmGroup:
    """One swarm run: a lone Locust process, or a master with ``local`` worker processes on this machine
    and room for ``remote`` more from other hosts, which the master waits for up to ``wait_s``."""

    def __init__(
        self,
        args: list[str],
        log_dir: Path,
        name: str,
        *,
        local: int = 0,
        remote: int = 0,
        port: int | None = None,
        wait_s: float = 60.0,
    ):
        self.args, self.log_dir, self.name = list(args), Path(log_dir), name
        self.local, self.remote, self.port, self.wait_s = local, remote, port, wait_s
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    @property
    def distributed(self) -> bool:
        return self.local + self.remote > 0

    def start(self) -> SwarmGroup:
        if not self.distributed:
            self.master = start_swarm(self.args, self.log_dir / f"{self.name}.log")
            return self
        expected = self.local + self.remote
        self.master = start_swarm(
            [
                *self.args,
                "--master",
                "--master-bind-port",
                str(self.port),
                "--expect-workers",
                str(expected),
                "--expect-workers-max-wait",
                f"{self.wait_s:g}",
            ],
            self.log_dir / f"{self.name}-master.log",
        )
        for i in range(self.local):
            log = open(self.log_dir / f"{self.name}-worker-{i}.log", "wb")
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "certstorm",
                        "swarm",
                        "--worker",
                        "--master-host",
                        "127.0.0.1",
                        "--master-port",
                        str(self.port),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        return self

    def running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.master.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> None:
        stop_swarm(self.master, timeout)
        for worker in self.workers:
            stop_swarm(worker, timeout)

    def pids(self) -> list[int]:
        return [p.pid for p in (self.master, *self.workers) if p is not None]
