"""The swarm's one load shape: Locust takes the first ``LoadTestShape`` it finds, silently, so the swarm
exposes exactly one, which asks the schedule named by ``--shape`` (:mod:`loadgen._shapes`) what to do
each second and hands the pace to the workers."""

from __future__ import annotations

import time

from locust import LoadTestShape

from loadgen._finish import finish_run
from loadgen._shapes import build_shape
from loadgen._state import MSG_PACE, Stage, current

__all__ = ["SwarmShape"]


class SwarmShape(LoadTestShape):
    """Delegates to the schedule named by ``--shape`` (see ``loadgen/_shapes.py``)."""

    use_common_options = True  # -u/-r/-t are read by the closed shape and -t by the others

    def tick(self):
        sw = current()
        if sw is None or sw.failed_setup:
            return None
        if sw.stage in (Stage.IDLE, Stage.FINISHED):  # a new run (the web UI can start several)
            sw.stage, sw.done, sw.done_workers = Stage.RUNNING, False, set()
            sw.shape = build_shape(sw.options, schedule=sw.schedule, clock=time.time)
        # with --hold, devices admitted in the passes stay connected until -t ends the run
        done = sw.all_done() and not getattr(sw.options, "hold", 0.0)
        plan = sw.shape.tick(self.get_run_time(), done)
        if plan is None:
            finish_run(sw)
            return None
        if not sw.shape.self_paced and (plan.rate, plan.users, plan.phase) != (sw.rate, sw.total_users, sw.phase):
            sw.set_pace(plan.rate, plan.users, plan.phase)
            if sw.role == "master":
                sw.runner.send_message(MSG_PACE, {"rate": plan.rate, "users": plan.users, "phase": plan.phase})
        return plan.users, plan.spawn_rate
