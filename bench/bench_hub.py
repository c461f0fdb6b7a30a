"""The hub over HTTP: one authentication round trip on loopback, and the hub's own CPU per
authentication against the two-verify floor (issue: hub CPU per authentication <= 2x the floor).

The hub runs as one worker pinned to one core and this process (the client) to another where there are
two or more, so the client's speed does not change the hub's CPU accounting, which comes from /proc for
the worker.
"""

from __future__ import annotations

import http.client
import os

import pytest

from bench.httpdevice import authenticate, register_and_prove
from bench.measure import bench_cores, raw_verify_seconds
from hubsim.service.launcher import HubProcess, cpu_seconds
from loadgen._fleet import generate_fleet

DEVICES = 1500
CORES = bench_cores()  # (hub's core, client's core), or None on one core


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("hub") / "hub.db", workers=1).start()
    if CORES is not None:  # the supervisor too: a worker it restarts inherits its core
        for pid in (proc.proc.pid, *proc.healthz()["workers"]):
            os.sched_setaffinity(pid, {CORES[0]})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def fleet_and_conn(hub, tmp_path_factory):
    fleet = generate_fleet(tmp_path_factory.mktemp("fleet"), DEVICES + 10, progress=False)
    admin = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    register_and_prove(admin, fleet.custodian())
    admin.close()  # admin requests move a connection off the device fast path for good
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    authenticate(conn, fleet.identity(0))  # the first sight of the intermediates
    yield fleet, conn
    conn.close()


def test_http_authentication_round_trip(benchmark, calibration, fleet_and_conn):
    fleet, conn = fleet_and_conn
    idents = iter(range(1, DEVICES))

    def setup():
        return (conn, fleet.identity(next(idents))), {}

    result = benchmark.pedantic(authenticate, setup=setup, rounds=300, iterations=1)
    assert result["first_connection"]
    calibration.record(benchmark)


def _floor_on_core(core: int | None) -> float:
    """One raw verify measured on ``core`` (the hub's, while it is idle): the two cores of a shared VM
    need not be equally fast, so the hub's CPU is compared with verifies on the core it ran on."""
    if core is None:
        return raw_verify_seconds()
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return raw_verify_seconds()
    finally:
        os.sched_setaffinity(0, old)


def test_hub_cpu_per_authentication(benchmark, calibration, hub, fleet_and_conn):
    """Hub worker CPU over a fixed number of authentications, from the worker's own accounting."""
    fleet, conn = fleet_and_conn
    pids = hub.healthz()["workers"]
    start, count = 400, DEVICES - 400
    identities = [fleet.identity(i) for i in range(start, start + count)]
    hub_core = CORES[0] if CORES is not None else None
    floors = [_floor_on_core(hub_core)]

    def run():
        before = cpu_seconds(pids)
        for ident in identities:
            authenticate(conn, ident)
        return cpu_seconds(pids) - before

    spent = benchmark.pedantic(run, rounds=1, iterations=1)
    floors.append(_floor_on_core(hub_core))
    per_auth = spent / count
    verify = sum(floors) / 2  # before and after, on the hub's core
    floor = 2 * verify
    client_floor = 2 * calibration.verify  # the latest calibration, on the client's core
    benchmark.extra_info.update(hub_cpu_us_per_auth=round(per_auth * 1e6, 1), floor_us=round(floor * 1e6, 1),
                                floor_multiple=round(per_auth / floor, 3), authentications=count,
                                hub_core_verify_us=[round(f * 1e6, 1) for f in floors],
                                client_core_floor_us=round(client_floor * 1e6, 1),
                                client_core_floor_multiple=round(per_auth / client_floor, 3),
                                operations_per_round=count, cpu_seconds_per_operation=per_auth,
                                cpu_verify_seconds=verify,
                                verifies=round(per_auth / calibration.verify, 4),
                                verifies_min=round(per_auth / calibration.verify, 4))
    print(f"\nhub CPU per authentication: {per_auth * 1e6:.0f} µs = {per_auth / floor:.2f}x the floor measured "
          f"on the hub's core ({floor * 1e6:.0f} µs), {per_auth / client_floor:.2f}x the floor on the client's core "
          f"({client_floor * 1e6:.0f} µs)")
