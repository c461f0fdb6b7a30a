"""DPS's durability and a linked hub that is down. kill -9 of DPS (supervisor and every worker) in the
middle of a provisioning storm loses no acknowledged assignment, and the assigned hub holds every
acknowledged device. With a hub down, an evenly weighted group assigns to the others; a hashed group
answers 503 ``hub_unavailable`` with a retry-after, stores nothing, and assigns the device to its hub
once that hub is back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from test_service import eventually, metric, metric_values

from certstorm.processes import DpsProcess, HubProcess
from devicekit.dps import DpsSession, DpsTarget, provision
from devicekit.pki import SupplyChain
from hubsim.dps.engine import hashed_order

HUB_NAMES = ("hub-a", "hub-b")


@pytest.fixture
def world(tmp_path):
    hubs = {name: HubProcess(tmp_path / f"{name}.db", workers=1).start() for name in HUB_NAMES}
    dps = DpsProcess(tmp_path / "dps.db", workers=2, args=("--mqtts-port", "0", "--retry-after", "0")).start()
    processes = [dps, *hubs.values()]
    try:
        for name, hub in hubs.items():
            dps.link(hub, name)
        yield dps, hubs, processes
    finally:
        for process in processes:
            try:
                process.stop()
            finally:
                process.kill()


def enroll(dps, hubs, group: str, allocation: str) -> SupplyChain:
    chain = SupplyChain.build(1)
    dps.enroll(group, dps.register_ca(chain.company, hubs.values()), allocation, HUB_NAMES)
    return chain


def target_of(dps) -> DpsTarget:
    return DpsTarget("127.0.0.1", dps.mqtts_port, dps.id_scope, dps.tls_ca, timeout=5.0)


def test_kill_9_mid_storm_loses_no_acknowledged_assignment(world, tmp_path):
    dps, hubs, processes = world
    chain = enroll(dps, hubs, "storm", "evenly")
    devices = [chain.device(f"storm-{i}") for i in range(400)]
    target = target_of(dps)
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def storm(part):
        for device in part:
            if stop.is_set():
                return
            try:
                assigned = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.02)
            except Exception:  # the kill cuts connections: an unacknowledged device, retried below
                continue
            acknowledged[device.device_id] = assigned.hub

    threads = [threading.Thread(target=storm, args=(devices[i::6],)) for i in range(6)]
    pids = [dps.healthz()["supervisor"], *dps.healthz()["workers"]]
    for thread in threads:
        thread.start()
    eventually(lambda: _at_least(len(acknowledged), 40), timeout=60.0)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(30)
    dps.proc.wait(10)
    assert acknowledged and len(acknowledged) < len(devices), "the kill must land mid-storm"

    again = DpsProcess(dps.db, workers=2, args=("--mqtts-port", "0", "--retry-after", "0")).start()
    processes.append(again)
    for device_id, hub in acknowledged.items():
        registration = again.admin("GET", f"/registrations/{device_id}").json()
        assert registration.get("assignedHub") == hub, (device_id, registration)
        recorded = hubs[hub].admin("GET", f"/devices/{device_id}").json()
        assert recorded["provisioned"]["thumbprint"] == registration["thumbprint"], (device_id, recorded)
    # the devices the kill interrupted provision now, and the acknowledged ones keep their hub
    target = target_of(again)
    interrupted = [d for d in devices if d.device_id not in acknowledged][:6]
    kept = [d for d in devices if d.device_id in acknowledged][:6]
    assert interrupted and kept
    for device in interrupted + kept:
        assigned = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.02)
        assert assigned.hub == acknowledged.get(device.device_id, assigned.hub) and assigned.hub in hubs


def _at_least(value: int, floor: int) -> None:
    assert value >= floor, (value, floor)


@pytest.mark.slow  # about 11 s of polls while the hub is down and after it is back
def test_a_hub_that_is_down(world, tmp_path):
    dps, hubs, processes = world
    evenly = enroll(dps, hubs, "evenly", "evenly")
    hashed = enroll(dps, hubs, "hashed", "hashed")
    target = target_of(dps)
    assert hubs["hub-b"].stop() == 0

    # evenly weighted: every device goes to the hub that is up
    for i in range(4):
        device = evenly.device(f"even-{i}")
        assigned = provision(target, device.device_id, device.chain_der(), device.private_key, min_wait=0.02)
        assert assigned.hub == "hub-a"

    # hashed: a device whose hub is down is told to retry; nothing is stored
    device_id = next(f"hash-{i}" for i in range(100) if hashed_order(f"hash-{i}", HUB_NAMES)[0] == "hub-b")
    device = hashed.device(device_id)
    session = DpsSession(target).connect(device.device_id, device.chain_der(), device.private_key)
    try:
        operation = session.register(device_id).body["operationId"]
        answer = _poll_until(session, operation, lambda a: a.status != 202)
        assert (answer.status, answer.body["error"]) == (503, "hub_unavailable") and answer.retry_after is not None
        assert dps.admin("GET", f"/registrations/{device_id}").json()["error"] == "registration_not_found"

        def counted():
            values = metric_values(dps)
            assert (
                metric(
                    values, "certstorm_authentications_total", outcome="refused", step="assign", code="hub_unavailable"
                )
                >= 1
            )

        eventually(counted, timeout=5.0)

        # the hub comes back (on another port): once linked again, the next polls assign the device to it
        back = HubProcess(hubs["hub-b"].db, workers=1).start()
        processes.append(back)
        dps.link(back, "hub-b")
        answer = _poll_until(session, operation, lambda a: a.status == 200, seconds=15.0)
        assert answer.body["registrationState"]["assignedHub"] == "hub-b"
        assert back.admin("GET", f"/devices/{device_id}").json()["provisioned"]["detail"]["group"] == "hashed"
    finally:
        session.close()


def _poll_until(session: DpsSession, operation: str, done, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while True:
        answer = session.poll(operation)
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(max(answer.retry_after or 0.0, 0.5))
