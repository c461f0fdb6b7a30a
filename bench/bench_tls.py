"""Server CPU per admitted device by transport, in one run on one machine: the hub's HTTP two-step
exchange (cached engine path), the hub's MQTT-over-TLS listener in ``full`` and ``cached`` validation
modes and with TLS session resumption, and Mosquitto -- each as a multiple of the two-verify floor
measured on the server's core.

This answers what a cached, precomputed verification path buys when the proof of possession is the TLS
handshake itself: a full mTLS handshake costs the server ECDHE, its own signature and the client's
CertificateVerify check whatever the chain validation costs.

Each server (one hub worker, or Mosquitto) is pinned to one core and this process, the clients, to
another; server CPU comes from /proc for the server's processes. Every device is a first connection
(after one warm-up device per server that puts the fleet's intermediates in the caches), except the
resumption case, which reconnects the devices the cached case admitted with their TLS sessions. The
generator's own CPU per mTLS admission (TLS 1.3, P-256, no resumption) is reported beside.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.broker import INSTALL_HINT, Mosquitto, mosquitto_binary
from bench.measure import bench_cores, raw_verify_on_core
from certstorm.processes import HubProcess, cpu_seconds
from devicekit.fleet import generate_fleet
from devicekit.httpdevice import authenticate_all
from devicekit.hubclient import HubClient
from devicekit.mqtts import MqttsClient, MqttsTarget

COUNT = 400  # admissions per case
CLIENTS = 4  # concurrent clients: enough to keep one server core busy
CORES = bench_cores()


def _pin(pids) -> None:
    if CORES is not None:
        for pid in pids:
            os.sched_setaffinity(pid, {CORES[0]})


def _connect_all(client: MqttsClient, identities, sessions=None) -> list:
    """Connect every identity (CONNACK 0 each, then DISCONNECT) over CLIENTS threads; returns the
    sessions to resume, in order."""
    sessions = sessions or [None] * len(identities)
    out = [None] * len(identities)

    def run(part):
        for i in part:
            ident = identities[i]
            connection = client.connect(ident.device_id, ident.chain_der(), ident.private_key, session=sessions[i])
            out[i] = connection.session()
            connection.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(run, [range(k, len(identities), CLIENTS) for k in range(CLIENTS)]))
    return out


class Cases:
    """Runs the cases one after the other, each bracketed by verifies on the server core. The floor
    every case is divided by is the median of all those verifies: on a busy machine one bracket's
    verifies scatter far more than the server's CPU accounting, and one floor keeps the cases' ratios
    to it in the proportions of their CPU."""

    def __init__(self):
        self.spent: dict[str, tuple[float, float]] = {}  # case -> (server, generator) CPU seconds
        self.verifies: list[float] = []
        self.core = CORES[0] if CORES is not None else None

    def measure(self, name: str, pids, work) -> None:
        self.verifies.append(raw_verify_on_core(self.core))
        cpu0, gen0 = cpu_seconds(pids), time.process_time()
        work()
        self.spent[name] = (cpu_seconds(pids) - cpu0, time.process_time() - gen0)
        self.verifies.append(raw_verify_on_core(self.core))

    def rows(self) -> tuple[float, dict[str, dict]]:
        floor = 2 * statistics.median(self.verifies)
        return floor, {
            name: {
                "server_cpu_us": round(server / COUNT * 1e6, 1),
                "floor_multiple": round(server / COUNT / floor, 3),
                "generator_cpu_us": round(generator / COUNT * 1e6, 1),
            }
            for name, (server, generator) in self.spent.items()
        }


def test_server_cpu_per_admission_by_transport(benchmark, tmp_path):
    fleet = generate_fleet(tmp_path / "fleet", 3 * COUNT + 3, progress=False)
    ids = [fleet.identity(i) for i in range(3 * COUNT + 3)]
    warm = [ids[0], ids[1], ids[2]]
    http_ids, tls_ids, full_ids = ids[3 : 3 + COUNT], ids[3 + COUNT : 3 + 2 * COUNT], ids[3 + 2 * COUNT :]
    cases = Cases()

    def run():
        for mode in ("cached", "full"):
            with HubProcess(
                tmp_path / f"hub-{mode}.db", workers=1, args=("--mqtts-port", "0", "--mqtts-validation", mode)
            ) as hub:
                pids = hub.healthz()["workers"]
                _pin([hub.proc.pid, *pids])
                HubClient(hub.url, token=hub.admin_token()).ensure_ca(fleet.custodian())
                if mode == "cached":
                    authenticate_all(hub.host, hub.port, warm[:1], connections=1)
                    cases.measure(
                        "http two-step (cached)",
                        pids,
                        lambda: authenticate_all(hub.host, hub.port, http_ids, connections=CLIENTS),
                    )
                    client = MqttsClient(MqttsTarget.from_url(hub.mqtts_url, ca_file=hub.tls_ca))
                    _connect_all(client, warm[1:2])
                    sessions = []
                    cases.measure(
                        "hub mTLS cached", pids, lambda c=client, s=sessions: s.extend(_connect_all(c, tls_ids))
                    )
                    cases.measure("hub mTLS resumed", pids, lambda c=client, s=sessions: _connect_all(c, tls_ids, s))
                else:
                    client = MqttsClient(MqttsTarget.from_url(hub.mqtts_url, ca_file=hub.tls_ca))
                    _connect_all(client, warm[2:3])
                    cases.measure("hub mTLS full", pids, lambda c=client: _connect_all(c, full_ids))
        if mosquitto_binary() is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"mosquitto is missing in CI: {INSTALL_HINT}")
            print(f"\nMosquitto not measured: {INSTALL_HINT}")
            return
        with Mosquitto(tmp_path / "mosquitto", fleet.ca_certificate) as broker:
            _pin([broker.pid])
            client = MqttsClient(MqttsTarget.from_url(broker.url, ca_file=broker.server_ca))
            _connect_all(client, warm[:1])
            cases.measure("mosquitto", [broker.pid], lambda: _connect_all(client, tls_ids))

    benchmark.pedantic(run, rounds=1, iterations=1)
    floor, rows = cases.rows()
    cached, full = rows["hub mTLS cached"]["server_cpu_us"], rows["hub mTLS full"]["server_cpu_us"]
    ratios = {"cached_over_full": round(cached / full, 3)}
    if "mosquitto" in rows:
        ratios["cached_over_mosquitto"] = round(cached / rows["mosquitto"]["server_cpu_us"], 3)
    # the regression gate's cost: the hub's cached-mode CPU per admission, in verifies on its core
    verifies = round(rows["hub mTLS cached"]["server_cpu_us"] / (floor * 1e6 / 2), 4)
    benchmark.extra_info.update(verifies=verifies, verifies_min=verifies)
    generator = rows["hub mTLS cached"]["generator_cpu_us"]
    benchmark.extra_info.update(
        cases=rows,
        ratios=ratios,
        admissions_per_case=COUNT,
        floor_us=round(floor * 1e6, 1),
        floor_verifies_us=[round(v * 1e6, 1) for v in cases.verifies],
        generator_admissions_per_core_second=round(1e6 / generator) if generator else None,
    )
    print(
        f"\nserver CPU per admitted device, {COUNT} devices per case, one server core; two-verify floor "
        f"{floor * 1e6:.0f} µs (median of {len(cases.verifies)} verifies on that core, "
        f"{min(cases.verifies) * 1e6:.0f}-{max(cases.verifies) * 1e6:.0f} µs each):"
    )
    for name, row in rows.items():
        print(
            f"  {name:24s} {row['server_cpu_us']:8.0f} µs  = {row['floor_multiple']:5.2f}x the floor   "
            f"generator {row['generator_cpu_us']:.0f} µs"
        )
    print(
        f"  ratios: {ratios}; generator: {benchmark.extra_info['generator_admissions_per_core_second']} "
        f"mTLS admissions per core-second (cached case)"
    )
