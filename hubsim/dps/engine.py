"""The provisioning engine: enrollment groups, linked hubs and the allocation of devices to hubs. No I/O,
no clock of its own: the DPS service drives it, the tests drive it alike.

A device is attested by the hub's own engine (:class:`hubsim.engine.AuthEngine`: CA registration with
proof of possession, revocation, the cached chain validation), so DPS and the hub give one verdict for
one chain. The CA the device's path ends at selects the enrollment group; the group's allocation policy
picks one of its hubs:

* ``hashed``: rendezvous hashing of the registration id over the group's hubs -- stable for a device, and
  adding or removing a hub moves only the devices that hash to it;
* ``evenly``: the hub with the fewest registered devices (ties by name);
* ``static``: the group's one hub.

Re-registration of an assigned device keeps its hub under the group's ``reprovision`` policy ``never``;
``reassign`` runs the allocation again. A hub that cannot take the device is *unavailable*: ``evenly``
allocates among the others, ``hashed`` and ``static`` refuse with ``hub_unavailable`` (their promise is
a device's hub, which a hub that is briefly down must not change).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from hubsim.engine import Admission, AuthEngine
from hubsim.errors import AuthError

ALLOCATIONS = ("hashed", "evenly", "static")
REPROVISION = ("never", "reassign")
MAX_HUBS_PER_GROUP = 50
# 1 to 128 characters; letters, digits and - . _ : ; the last one a letter, digit or '-'.
REGISTRATION_ID = re.compile(r"[A-Za-z0-9._:-]{0,127}[A-Za-z0-9-]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True)
class LinkedHub:
    """A hub devices may be assigned to: ``name`` is the host devices connect to (DPS's ``assignedHub``),
    ``url`` its management API."""

    name: str
    url: str

    def to_json(self) -> dict:
        return {"name": self.name, "url": self.url}


@dataclass(frozen=True)
class Group:
    """An enrollment group: every device whose path ends at ``ca`` (a verified CA) enrolls through it."""

    id: str
    ca: str
    allocation: str
    hubs: tuple[str, ...]
    reprovision: str = "never"
    enabled: bool = True

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "ca": self.ca,
            "allocation": self.allocation,
            "hubs": list(self.hubs),
            "reprovision": self.reprovision,
            "enabled": self.enabled,
        }


class Allocation(NamedTuple):
    """Where the device goes, and how (``initialAssignment``, ``unchanged`` or ``reassigned``)."""

    hub: str
    substatus: str


def check_registration_id(device_id: str) -> str:
    """The device id (certificate CN) as a registration id; ``registration_id_invalid`` otherwise."""
    if not isinstance(device_id, str) or not REGISTRATION_ID.fullmatch(device_id):
        raise AuthError("registration_id_invalid")
    return device_id


def hashed_order(registration_id: str, hubs: Iterable[str]) -> list[str]:
    """The group's hubs by rendezvous weight for this device, highest first."""
    key = registration_id.encode("utf-8", "surrogatepass")
    return sorted(hubs, key=lambda h: (hashlib.sha256(key + b"\0" + h.encode()).digest(), h), reverse=True)


def check_hub(name: str, doc: Mapping) -> LinkedHub:
    """A linked hub from its management JSON (``url``); ``malformed_input`` naming what is wrong."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AuthError("malformed_input", "a hub name is the host devices connect to: letters, digits, - . _ :")
    url = doc.get("url")
    try:  # urlsplit refuses a broken [IPv6] host, .port an out-of-range port, each with ValueError
        parts = urlsplit(url) if isinstance(url, str) and len(url) <= 1024 else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise AuthError("malformed_input", "'url' must be the hub's http:// or https:// address")
    return LinkedHub(name, url.rstrip("/"))


class ProvisioningEngine:
    """Enrollment groups and linked hubs over an :class:`AuthEngine` that attests devices."""

    def __init__(self, auth: AuthEngine):
        self.auth = auth
        self.groups: dict[str, Group] = {}
        self.hubs: dict[str, LinkedHub] = {}
        self._by_ca: dict[str, str] = {}

    # -- configuration ---------------------------------------------------------------------------------
    def check_group(self, group_id: str, doc: Mapping) -> Group:
        """A group from its management JSON; refuses what cannot work (unknown CA or hub, bad policy)."""
        if not isinstance(group_id, str) or not _NAME.fullmatch(group_id):
            raise AuthError("malformed_input", "a group id is 1 to 128 of letters, digits, - . _ :")
        ca = doc.get("ca")
        if not isinstance(ca, str):
            raise AuthError("malformed_input", "'ca' must be the id of a CA registered here")
        ca = self.auth.get_ca(ca).id  # ca_not_found
        allocation = doc.get("allocation", "hashed")
        if allocation not in ALLOCATIONS:
            raise AuthError("malformed_input", f"'allocation' must be one of {', '.join(ALLOCATIONS)}")
        reprovision = doc.get("reprovision", "never")
        if reprovision not in REPROVISION:
            raise AuthError("malformed_input", f"'reprovision' must be one of {', '.join(REPROVISION)}")
        enabled = doc.get("enabled", True)
        if not isinstance(enabled, bool):
            raise AuthError("malformed_input", "'enabled' must be true or false")
        hubs = doc.get("hubs")
        if not isinstance(hubs, list) or not hubs or not all(isinstance(h, str) for h in hubs):
            raise AuthError("malformed_input", "'hubs' must be a non-empty list of linked hub names")
        hubs = tuple(dict.fromkeys(hubs))
        if len(hubs) > MAX_HUBS_PER_GROUP:
            raise AuthError("malformed_input", f"a group links at most {MAX_HUBS_PER_GROUP} hubs")
        if allocation == "static" and len(hubs) != 1:
            raise AuthError("malformed_input", "a static group names exactly one hub")
        for hub in hubs:
            if hub not in self.hubs:
                raise AuthError("hub_not_found", f"no linked hub {hub!r}: link it first (PUT /hubs/{{name}})")
        other = self._by_ca.get(ca)
        if other is not None and other != group_id:
            raise AuthError("enrollment_group_conflict", f"enrollment group {other!r} already uses this CA")
        return Group(group_id, ca, allocation, hubs, reprovision, enabled)

    def set_group(self, group: Group) -> None:
        self.remove_group(group.id)
        self.groups[group.id] = group
        self._by_ca[group.ca] = group.id

    def remove_group(self, group_id: str) -> None:
        old = self.groups.pop(group_id, None)
        if old is not None and self._by_ca.get(old.ca) == group_id:
            del self._by_ca[old.ca]

    def get_group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise AuthError("enrollment_group_not_found")
        return group

    def set_hub(self, hub: LinkedHub) -> None:
        self.hubs[hub.name] = hub

    def remove_hub(self, name: str) -> None:
        self.hubs.pop(name, None)

    def groups_using(self, hub: str) -> list[str]:
        return sorted(g.id for g in self.groups.values() if hub in g.hubs)

    # -- devices -----------------------------------------------------------------------------------------
    def attest(self, chain: bytes | Sequence[bytes], client_id: str) -> Admission:
        """A device whose key possession the transport proved: its chain judged by the hub's engine
        (cached path, revocation, a CA still verified), its CN a valid registration id."""
        admission = self.auth.admit_proven(chain, client_id)
        check_registration_id(admission.device_id)
        return admission

    def group_for(self, ca_id: str) -> Group:
        """The enrollment group of a verified CA: ``enrollment_missing`` or ``enrollment_disabled``."""
        group_id = self._by_ca.get(ca_id)
        if group_id is None:
            raise AuthError("enrollment_missing")
        group = self.groups[group_id]
        if not group.enabled:
            raise AuthError("enrollment_disabled")
        return group

    def allocate(
        self,
        group: Group,
        registration_id: str,
        previous: str | None,
        loads: Mapping[str, int],
        unavailable: Iterable[str] = (),
    ) -> Allocation:
        """Where the device goes. ``previous``: its current hub, if it has one; ``loads``: devices per hub;
        ``unavailable``: hubs that cannot take it now."""
        down = set(unavailable)
        hubs = [h for h in group.hubs if h in self.hubs]
        if previous is not None and previous in hubs and group.reprovision == "never":
            if previous in down:
                raise AuthError("hub_unavailable", f"hub {previous} cannot take the device now")
            return Allocation(previous, "unchanged")
        if not hubs:
            raise AuthError("hub_unavailable", "the enrollment group has no linked hub")
        if group.allocation == "evenly":
            counts = {h: loads.get(h, 0) - (1 if h == previous else 0) for h in hubs if h not in down}
            if not counts:
                raise AuthError("hub_unavailable", "no hub of the enrollment group can take the device now")
            hub = min(counts, key=lambda h: (counts[h], h))
        else:
            hub = hubs[0] if group.allocation == "static" else hashed_order(registration_id, hubs)[0]
            if hub in down:
                raise AuthError("hub_unavailable", f"hub {hub} cannot take the device now")
        if previous is None:
            return Allocation(hub, "initialAssignment")
        return Allocation(hub, "unchanged" if hub == previous else "reassigned")


__all__ = [
    "ALLOCATIONS",
    "MAX_HUBS_PER_GROUP",
    "REGISTRATION_ID",
    "REPROVISION",
    "Allocation",
    "Group",
    "LinkedHub",
    "ProvisioningEngine",
    "check_hub",
    "check_registration_id",
    "hashed_order",
]
