"""One DPS worker's core, transport-free: the hub's worker core (engine, stores, sync, metrics, the
management gate) with the provisioning engine on top, the writes into linked hubs, and registration
operations.

A registration runs as an *operation*: the device is attested (its chain judged by the hub's engine),
its enrollment group chosen by its CA, its hub by the group's allocation policy; the hub records the
device (``PUT /devices/{id}`` with the hub's management token); then DPS commits the assignment with
``synchronous=FULL``; only then may the device be told. A hub that cannot record the device is marked
down for a moment: ``evenly`` groups allocate among the others, ``hashed`` and ``static`` groups answer
``hub_unavailable`` with a retry-after. Nothing is assigned that the hub did not record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

from hubsim.dps.engine import Group, LinkedHub, ProvisioningEngine
from hubsim.dps.store import DpsStore
from hubsim.engine import Admission, DisabledDevices
from hubsim.errors import AuthError
from hubsim.service.hub import Hub, WorkerConfig
from hubsim.service.metrics import Metrics

log = logging.getLogger("certstorm.dps")

DOWN_FOR = 2.0  # seconds a hub that failed a write is skipped before it is tried again
RETRIABLE = frozenset({"hub_unavailable", "throttled", "internal_error"})


@dataclass(frozen=True)
class DpsWorkerConfig(WorkerConfig):
    id_scope: str = ""
    retry_after: int = 1  # seconds a device is told to wait before polling its operation
    hub_timeout: float = 5.0  # seconds a write into a linked hub may take
    poll_limit: tuple[int, float] = (5, 10.0)  # polls per device per window (Azure's documented 5 per 10 s)


class Attestations(DisabledDevices):
    """The hub engine's device registry on DPS: nothing to record per authentication (a registration is
    recorded by the store, after its hub took it)."""

    pending = 0

    def admit(self, device_id: str, ca: str, now: float) -> bool:
        return False

    def get(self, device_id: str) -> dict | None:
        return None

    def flush(self) -> int:
        return 0

    def lag(self, now: float) -> float:
        return 0.0


class DpsMetrics(Metrics):
    """The hub's metrics plus assignments and writes into hubs."""

    def __init__(self, challenge_ttl: float):
        super().__init__(challenge_ttl)
        from prometheus_client import Counter

        self._assigned = Counter(
            "certstorm_dps_assignments_total",
            "Registrations assigned and acknowledged, by hub and substatus (initialAssignment, unchanged, reassigned).",
            ["hub", "substatus"],
        )
        self._writes = Counter(
            "certstorm_dps_hub_writes_total",
            "Writes of a device into its assigned hub's registry, by hub and result (ok, failed).",
            ["hub", "result"],
        )
        self._assigned_counts: dict[tuple[str, str], int] = {}
        self._write_counts: dict[tuple[str, str], int] = {}

    def assigned(self, hub: str, substatus: str) -> None:
        key = (hub, substatus)
        self._assigned_counts[key] = self._assigned_counts.get(key, 0) + 1

    def hub_write(self, hub: str, ok: bool) -> None:
        key = (hub, "ok" if ok else "failed")
        self._write_counts[key] = self._write_counts.get(key, 0) + 1

    def flush(self, now: float, engine_stats: dict, registry_pending: int, registry_lag: float) -> None:
        super().flush(now, engine_stats, registry_pending, registry_lag)
        for counter, name in ((self._assigned, "_assigned_counts"), (self._writes, "_write_counts")):
            counts = getattr(self, name)
            setattr(self, name, {})
            for labels, n in counts.items():
                counter.labels(*labels).inc(n)


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def registration_state(row: dict) -> dict:
    """A stored registration in DPS's wire shape (``registrationState``)."""
    return {
        "registrationId": row["id"],
        "createdDateTimeUtc": iso(row["created_at"]),
        "assignedHub": row["hub"],
        "deviceId": row["id"],
        "status": "assigned",
        "substatus": row["substatus"],
        "lastUpdatedDateTimeUtc": iso(row["updated_at"]),
        "etag": str(row["etag"]),
    }


class Operation:
    """One registration in flight: its task, then its stored row or its refusal."""

    __slots__ = ("admission", "error", "group", "id", "row", "task")

    def __init__(self, admission: Admission, group: Group):
        self.id = secrets.token_hex(16)
        self.admission = admission
        self.group = group
        self.task: asyncio.Task | None = None
        self.row: dict | None = None
        self.error: AuthError | None = None

    @property
    def registration_id(self) -> str:
        return self.admission.device_id

    def answer(self) -> tuple[int, dict]:
        """(status, JSON) of this operation as it stands."""
        if self.row is not None:
            state = registration_state(self.row)
            return 200, {"operationId": self.id, "status": "assigned", "registrationState": state}
        if self.error is not None:
            return self.error.status, self.error.to_json()
        return 202, {"operationId": self.id, "status": "assigning"}


class Linker:
    """Writes devices into linked hubs over their management API; remembers hubs that failed for a moment."""

    def __init__(self, timeout: float, source: str):
        self.timeout = timeout
        self.source = source
        self._session = None
        self._down: dict[str, float] = {}
        self._last_warning: dict[str, float] = {}

    def down(self) -> set[str]:
        now = time.monotonic()
        return {name for name, until in self._down.items() if until > now}

    async def write(self, hub: LinkedHub, token: str | None, identity: dict, device_id: str) -> bool:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), connector=aiohttp.TCPConnector(limit=256)
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{hub.url}/devices/{quote(device_id, safe='')}"
        problem = None
        try:
            async with self._session.put(url, json={"source": self.source, **identity}, headers=headers) as reply:
                await reply.read()
                if reply.status != 200:
                    problem = f"answered {reply.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            self._down.pop(hub.name, None)
            return True
        now = time.monotonic()
        self._down[hub.name] = now + DOWN_FOR
        if now - self._last_warning.get(hub.name, 0.0) > 10.0:
            self._last_warning[hub.name] = now
            log.warning("linked hub %s (%s) could not record a device: %s", hub.name, hub.url, problem)
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Provisioner(Hub):
    """One DPS worker: the hub's core (CAs, revocations, the management gate, metrics, sync) with
    enrollment groups, linked hubs and registrations."""

    store_class = DpsStore
    config: DpsWorkerConfig
    store: DpsStore

    def __init__(self, config: DpsWorkerConfig):
        super().__init__(config)
        self.linker = Linker(config.hub_timeout, f"dps:{self.id_scope}")
        self._inflight: dict[str, int] = {}

    def make_registry(self):
        return Attestations()

    def make_metrics(self) -> DpsMetrics:
        return DpsMetrics(self.config.policy.challenge_ttl)

    # -- configuration shared with the other workers ------------------------------------------------------
    def _load(self) -> int:
        seq = super()._load()
        self.dps = ProvisioningEngine(self.engine)
        self.tokens: dict[str, str | None] = {}
        self.id_scope = self.store.id_scope()
        for name, url, token in self.store.hub_rows():
            self.dps.set_hub(LinkedHub(name, url))
            self.tokens[name] = token
        for doc in self.store.group_docs():
            self.dps.set_group(_group(doc))
        return seq

    def apply_change(self, kind: str, key: str) -> None:
        if kind == "hub":
            row = self.store.hub_row(key)
            if row is None:
                self.dps.remove_hub(key)
                self.tokens.pop(key, None)
            else:
                self.dps.set_hub(LinkedHub(row[0], row[1]))
                self.tokens[row[0]] = row[2]
        elif kind == "group":
            doc = self.store.group_doc(key)
            if doc is None:
                self.dps.remove_group(key)
            else:
                self.dps.set_group(_group(doc))
        else:
            super().apply_change(kind, key)

    # -- the device path ----------------------------------------------------------------------------------
    def attest(self, chain, client_id: str) -> Admission:
        """The device judged by the hub's engine (timed); AuthError when refused."""
        self.catch_up()
        admission, error, _took = self._timed(self.metrics.tls, self.dps.attest, chain, client_id)
        if error is not None:
            raise error
        return admission

    def begin(self, admission: Admission) -> Operation:
        """Start a registration: its group is checked now (AuthError), its hub is found in a task."""
        group = self.dps.group_for(admission.ca)
        operation = Operation(admission, group)
        operation.task = asyncio.get_running_loop().create_task(self._run(operation))
        return operation

    def again(self, operation: Operation) -> None:
        """Run an operation that found its hub unavailable once more (a device polled it)."""
        done = operation.task is not None and operation.task.done()
        if done and operation.error is not None and operation.error.code in RETRIABLE:
            operation.error = None
            operation.task = asyncio.get_running_loop().create_task(self._run(operation))

    async def _run(self, operation: Operation) -> None:
        try:
            operation.row = await self.assign(operation)
        except AuthError as exc:
            operation.error = exc
            self.metrics.refused("assign", exc.code)
        except Exception:
            log.exception("registration %s failed on DPS's side", operation.id)
            operation.error = AuthError("internal_error")
            self.metrics.refused("assign", "internal_error")

    async def assign(self, operation: Operation) -> dict:
        """Allocate, have the hub record the device, then commit: the stored registration."""
        admission, group = operation.admission, operation.group
        device_id = admission.device_id
        previous = self.store.registration(device_id)
        previous_hub = previous["hub"] if previous else None
        down = self.linker.down()
        identity = {
            "thumbprint": admission.leaf.hex(),
            "ca": admission.ca,
            "detail": {"group": group.id, "operation": operation.id},
        }
        while True:
            loads = {}
            if group.allocation == "evenly":  # the only policy that reads them: one SQL read spared otherwise
                loads = self.store.hub_loads()
                for hub, n in self._inflight.items():
                    loads[hub] = loads.get(hub, 0) + n
            allocation = self.dps.allocate(group, device_id, previous_hub, loads, down)
            hub = self.dps.hubs[allocation.hub]
            self._inflight[hub.name] = self._inflight.get(hub.name, 0) + 1
            try:
                ok = await self.linker.write(hub, self.tokens.get(hub.name), identity, device_id)
            finally:
                self._inflight[hub.name] -= 1
            self.metrics.hub_write(hub.name, ok)
            if ok:
                break
            down.add(hub.name)
            if group.allocation != "evenly" or (previous_hub == hub.name and group.reprovision == "never"):
                raise AuthError("hub_unavailable", f"hub {hub.name} could not record the device; retry later")
        row = self.store.commit_registration(
            device_id,
            group.id,
            allocation.hub,
            admission.leaf.hex(),
            admission.ca,
            operation.id,
            allocation.substatus,
            time.time(),
        )
        self.metrics.assigned(allocation.hub, allocation.substatus)
        return row

    def registration_throttle(self) -> float:
        """Seconds to wait when the registrations quota is spent (counted), else 0.0."""
        return self._throttled()

    async def close_async(self) -> None:
        await self.linker.close()


def _group(doc: dict) -> Group:
    return Group(
        doc["id"],
        doc["ca"],
        doc["allocation"],
        tuple(doc["hubs"]),
        doc.get("reprovision", "never"),
        doc.get("enabled", True),
    )


__all__ = [
    "DOWN_FOR",
    "RETRIABLE",
    "Attestations",
    "DpsMetrics",
    "DpsWorkerConfig",
    "Linker",
    "Operation",
    "Provisioner",
    "iso",
    "registration_state",
]
