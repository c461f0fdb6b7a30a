"""The processes a run drives: the hub, DPS and the swarm as subprocesses, and their CPU accounting."""

from certstorm.processes.cpu import CpuMeter, cpu_seconds
from certstorm.processes.dps import DpsProcess
from certstorm.processes.hub import HubProcess, Reply
from certstorm.processes.swarm import SwarmGroup, newest_summary, start_swarm, stop_swarm, worker_command

__all__ = [
    "CpuMeter",
    "DpsProcess",
    "HubProcess",
    "Reply",
    "SwarmGroup",
    "cpu_seconds",
    "newest_summary",
    "start_swarm",
    "stop_swarm",
    "worker_command",
]
