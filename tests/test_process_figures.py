"""Process figures read through psutil: the hub's CPU seconds (benchmarks, ``certstorm run``) and the
memory and CPU the swarm's summary records for a hub on the same machine."""

from __future__ import annotations

import subprocess
import sys

from certstorm.processes import HubProcess, cpu_seconds
from devicekit.hubclient import HubClient


def test_cpu_seconds_counts_a_busy_process_and_nothing_for_one_that_is_gone():
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\n"
            "while time.process_time() < end: pass\nimport sys; sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        while cpu_seconds([busy.pid]) < 0.25:  # it spins for 0.3 s of CPU, then waits for stdin
            assert busy.poll() is None
        assert cpu_seconds([busy.pid]) < 5
    finally:
        busy.communicate(b"")
    assert cpu_seconds([busy.pid]) == 0.0  # reaped: no such process


def test_hub_memory_lists_supervisor_and_workers(tmp_path):
    with HubProcess(tmp_path / "hub.db", workers=2) as hub:
        figures = HubClient(hub.url).memory()
        workers = hub.healthz()["workers"]
    assert figures["workers"] == workers
    assert set(figures["rss_kib"]) == {str(hub.proc.pid), *map(str, workers)}
    assert all(10_000 < kib < 2_000_000 for kib in figures["rss_kib"].values()), figures["rss_kib"]
    assert figures["total_rss_kib"] == sum(figures["rss_kib"].values())
    assert set(figures["worker_cpu_s"]) == set(map(str, workers))
    assert all(isinstance(cpu, float) and cpu >= 0 for cpu in figures["worker_cpu_s"].values())


def test_hub_memory_is_not_read_for_a_remote_hub():
    assert HubClient("http://192.0.2.1:8080").memory() is None
