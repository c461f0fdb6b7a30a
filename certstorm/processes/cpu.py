"""CPU seconds of processes, read from the kernel's accounting (psutil)."""

from __future__ import annotations

import psutil

__all__ = ["CpuMeter", "cpu_seconds"]


class CpuMeter:
    """Cumulative CPU seconds of a process tree, summed from each process's own increase, so processes
    that exit or are replaced (a restarted worker) never make the total go backwards."""

    def __init__(self, pid: int):
        self.root = pid
        self._seen: dict[int, float] = {}
        self.total = 0.0

    def read(self) -> float:
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return self.total
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            now = times.user + times.system
            last = self._seen.get(proc.pid, 0.0)
            if now > last:
                self.total += now - last
                self._seen[proc.pid] = now
        return self.total


def cpu_seconds(pids) -> float:
    """User plus system CPU seconds the processes have used so far; a process that is gone counts 0."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
