"""DPS as a subprocess on loopback, for the run, the benchmarks and the tests: the hub's process wrapper
running ``python -m hubsim.dps``, which also learns DPS's id scope from the line DPS prints."""

from __future__ import annotations

import re

from certstorm.processes.hub import HubProcess
from devicekit.hubclient import HubClient

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

    def register_ca(self, company, hubs=()) -> str:
        """Register and prove ``company``'s CA on DPS and on each of ``hubs`` (which then admit its devices);
        returns DPS's id of the CA."""
        for hub in hubs:
            HubClient(hub.url, token=hub.admin_token()).ensure_ca(company)
        return HubClient(self.url, token=self.admin_token()).ensure_ca(company)["id"]

    def enroll(self, name: str, ca_id: str, allocation: str, hubs: list[str], **group) -> dict:
        """Create or replace enrollment group ``name`` over the linked ``hubs``."""
        doc = {"ca": ca_id, "allocation": allocation, "hubs": list(hubs), **group}
        reply = self.admin("PUT", f"/enrollment-groups/{name}", json_body=doc)
        if reply.status != 200:
            raise RuntimeError(f"enrolling {name}: {reply!r}")
        return reply.json()
