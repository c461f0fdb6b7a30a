"""DPS's supervisor: the hub's supervisor (run directory, database lock, management token, guard file,
shared quota bucket, ports, forked workers replaced when they die, clean stop) with DPS's store and
workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hubsim.dps import store as dpsstore
from hubsim.service.supervisor import HubConfig, Supervisor, default_db


def default_dps_db() -> Path:
    """``dps.db`` beside where the hub keeps its database by default (a per-user state directory)."""
    return default_db().with_name("dps.db")


@dataclass
class DpsConfig(HubConfig):
    id_scope: str | None = None  # None: made on first start and kept in the database
    retry_after: int = 1
    hub_timeout: float = 5.0


class DpsSupervisor(Supervisor):
    name = "dps"
    config: DpsConfig

    def __init__(self, config: DpsConfig, out=None):
        super().__init__(config, out)
        self.id_scope = ""

    def initialise_store(self, db: str) -> None:
        self.id_scope = dpsstore.initialise(db, self.config.id_scope)

    def make_worker_config(self, **fields):
        from hubsim.dps.core import DpsWorkerConfig

        config = self.config
        return DpsWorkerConfig(
            **fields, id_scope=self.id_scope, retry_after=config.retry_after, hub_timeout=config.hub_timeout
        )

    def worker_main(self, config, sock, ready_fd: int, supervisor_pid: int, listener) -> int:
        from hubsim.dps.worker import serve_dps
        from hubsim.service.worker import run_worker

        return run_worker(config, sock, ready_fd, supervisor_pid, listener, serve=serve_dps)

    def banner(self) -> str:
        quota = self.config.quota
        return (
            f"certstorm dps serving {self.url} with {self.count} worker(s); id scope {self.id_scope}; "
            f"db {os.path.abspath(self.config.db)}"
            + (f"; quota {quota.label} = {quota.rate:g} registrations/s" if quota else "")
        )


def serve(config: DpsConfig, out=None) -> int:
    return DpsSupervisor(config, out).run()


__all__ = ["DpsConfig", "DpsSupervisor", "default_dps_db", "serve"]
