"""DPS as a subprocess on loopback, for the run, the benchmarks and the tests: the hub's process wrapper
running ``python -m hubsim.dps``, which also learns DPS's id scope from the line DPS prints."""

from __future__ import annotations

import re

from certstorm.processes.hub import HubProcess

__all__ = ["DpsProcess"]


class DpsProcess(HubProcess):
    module = "hubsim.dps"

    def start(self, timeout: float = 30.0) -> DpsProcess:
        super().start(timeout)
        match = re.search(r"id scope (\S+);", self.log())
        self.id_scope = match.group(1) if match else ""
        return self

    def link(self, hub: HubProcess, name: str | None = None) -> dict:
        """Link ``hub`` (its name: the address devices connect to, by default its host)."""
        name = name or hub.host
        reply = self.admin("PUT", f"/hubs/{name}", json_body={"url": hub.url, "token": hub.admin_token()})
        if reply.status != 200:
            raise RuntimeError(f"linking {name}: {reply!r}")
        return reply.json()
