"""DPS's HTTP front: the hub's HTTP front (CAs with proof of possession, revocations, the audit log,
metrics, health, the management gate) with DPS's own endpoints -- linked hubs, enrollment groups,
registrations -- and the HTTP form of a registration, in certstorm's two steps: ``POST
/registrations/challenge`` with the chain, ``POST /registrations/proof`` with the signature, answered with
the assignment once the hub recorded it.
"""

from __future__ import annotations

import time

from aiohttp import web

from hubsim.dps.core import Provisioner, registration_state
from hubsim.dps.engine import check_hub, check_registration_id
from hubsim.errors import AuthError
from hubsim.service.codec import JSON_LIMIT, JSON_TYPES, error_reply, json_object
from hubsim.service.credential import TOKEN_CHARS, Operator, token_id
from hubsim.service.httpapi import ROUTES, HttpApi, json_response, to_response
from hubsim.service.quota import retry_after_header

_SHARED = tuple(
    r for r in ROUTES if r[0][:1] in ((), ("healthz",), ("metrics",), ("cas",), ("revocations",), ("audit",))
)
DPS_ROUTES = (
    *_SHARED,
    (("hubs",), {"GET": ("admin", "_list_hubs")}),
    (("hubs", "{}"), {"GET": ("admin", "_get_hub"), "PUT": ("admin", "_put_hub"), "DELETE": ("admin", "_delete_hub")}),
    (("enrollment-groups",), {"GET": ("admin", "_list_groups")}),
    (
        ("enrollment-groups", "{}"),
        {"GET": ("admin", "_get_group"), "PUT": ("admin", "_put_group"), "DELETE": ("admin", "_delete_group")},
    ),
    (("registrations", "challenge"), {"POST": ("challenge", "_challenge")}),
    (("registrations", "proof"), {"POST": ("proof", "_register")}),
    (("registrations", "{}"), {"GET": ("admin", "_get_registration")}),
)
_MANAGEMENT_HEADS = frozenset({"cas", "revocations", "audit", "hubs", "enrollment-groups"})


class DpsApi(HttpApi):
    """Answers every HTTP request of a DPS worker."""

    routes = DPS_ROUTES
    device_steps = False
    hub: Provisioner

    @staticmethod
    def is_management(parts: list[str]) -> bool:
        head = parts[0] if parts else ""
        if head == "registrations":
            return not (len(parts) == 2 and parts[1] in ("challenge", "proof"))
        return head in _MANAGEMENT_HEADS

    # -- the HTTP form of a registration ----------------------------------------------------------------
    async def _register(self, request, operator: None = None) -> web.Response:
        core = self.hub
        try:
            body = await self._body(request, JSON_LIMIT, JSON_TYPES)
        except AuthError as exc:
            return to_response(core.refusal("proof", exc))
        admission, refused, took = core.prove(body)
        if refused is not None:
            return to_response(refused)
        try:
            check_registration_id(admission.device_id)
            operation = core.begin(admission)
        except AuthError as exc:
            return to_response(core.refusal("proof", exc, pop=took))
        await operation.task
        status, body = operation.answer()
        if status != 200:  # counted when the operation failed
            retry = retry_after_header(core.config.retry_after) if operation.error.code == "hub_unavailable" else None
            return to_response(error_reply(operation.error, retry_after=retry))
        return json_response(body)

    # -- linked hubs --------------------------------------------------------------------------------------
    def _hub_json(self, name: str) -> dict:
        hub = self.hub.dps.hubs.get(name)
        if hub is None:
            raise AuthError("hub_not_found")
        token = self.hub.tokens.get(name)
        return {
            **hub.to_json(),
            "token_id": token_id(token) if token else None,
            "groups": self.hub.dps.groups_using(name),
        }

    async def _list_hubs(self, request, operator: Operator) -> web.Response:
        self.hub.sync()
        return json_response({"hubs": [self._hub_json(n) for n in sorted(self.hub.dps.hubs)]})

    async def _get_hub(self, request, operator: Operator, name: str) -> web.Response:
        self.hub.sync()
        return json_response(self._hub_json(name))

    async def _put_hub(self, request, operator: Operator, name: str) -> web.Response:
        doc = json_object(await self._body(request, JSON_LIMIT, JSON_TYPES))
        hub = check_hub(name, doc)
        token = doc.get("token")
        if token is not None and not (isinstance(token, str) and TOKEN_CHARS[0] <= len(token) <= TOKEN_CHARS[1]):
            raise AuthError("malformed_input", "'token' must be the hub's management token (32 to 512 characters)")
        self.store.put_hub(hub.name, hub.url, token, time.time(), operator)
        self.hub.sync()
        self.hub.changed()
        return json_response(self._hub_json(hub.name))

    async def _delete_hub(self, request, operator: Operator, name: str) -> web.Response:
        self.hub.sync()
        if name not in self.hub.dps.hubs:
            raise AuthError("hub_not_found")
        users = self.hub.dps.groups_using(name)
        if users:
            raise AuthError("malformed_input", f"enrollment groups {', '.join(users)} use this hub: change them first")
        if not self.store.delete_hub(name, time.time(), operator):
            raise AuthError("hub_not_found")
        self.hub.sync()
        self.hub.changed()
        return json_response({"name": name, "status": "unlinked"})

    # -- enrollment groups --------------------------------------------------------------------------------
    async def _list_groups(self, request, operator: Operator) -> web.Response:
        self.hub.sync()
        return json_response({"groups": [self.hub.dps.groups[g].to_json() for g in sorted(self.hub.dps.groups)]})

    async def _get_group(self, request, operator: Operator, group_id: str) -> web.Response:
        self.hub.sync()
        return json_response(self.hub.dps.get_group(group_id).to_json())

    async def _put_group(self, request, operator: Operator, group_id: str) -> web.Response:
        doc = json_object(await self._body(request, JSON_LIMIT, JSON_TYPES))
        self.hub.sync()
        group = self.hub.dps.check_group(group_id, doc)
        if not self.store.put_group(group, time.time(), operator):
            self.hub.sync()
            raise AuthError("enrollment_group_conflict")
        self.hub.sync()
        self.hub.changed()
        return json_response(group.to_json())

    async def _delete_group(self, request, operator: Operator, group_id: str) -> web.Response:
        self.hub.sync()
        self.hub.dps.get_group(group_id)
        if not self.store.delete_group(group_id, time.time(), operator):
            raise AuthError("enrollment_group_not_found")
        self.hub.sync()
        self.hub.changed()
        return json_response({"id": group_id, "status": "removed"})

    # -- registrations ------------------------------------------------------------------------------------
    async def _get_registration(self, request, operator: Operator, registration_id: str) -> web.Response:
        row = self.store.registration(registration_id)
        if row is None:
            raise AuthError("registration_not_found")
        return json_response(
            {
                **registration_state(row),
                "group": row["group"],
                "thumbprint": row["thumbprint"],
                "ca": row["ca"],
                "operationId": row["operation"],
            }
        )

    # -- service ------------------------------------------------------------------------------------------
    def health(self) -> dict:
        dps = self.hub.dps
        return {
            **super().health(),
            "service": "certstorm dps",
            "id_scope": self.hub.id_scope,
            "hubs": len(dps.hubs),
            "groups": len(dps.groups),
        }

    async def _index(self, request, operator: None) -> web.Response:
        endpoints = [f"{m} /{'/'.join(p)}" for p, methods in DPS_ROUTES for m in methods]
        return json_response({"service": "certstorm dps", "docs": "docs/dps.md", "endpoints": endpoints})


__all__ = ["DPS_ROUTES", "DpsApi"]
