"""Admission over mutual TLS, hub against C servers and swarm against a C client, in one run on one machine.

Server CPU per admitted device (each server pinned to one core, the clients to another; CPU from /proc):
the hub's listener in ``cached`` and ``full`` validation modes and with TLS session resumption, nginx (a
C server's full mTLS handshake with the system OpenSSL, no resumption) and Mosquitto (a C broker:
handshake, CONNECT, CONNACK). The generator: the Locust swarm's CPU per mTLS admission against
``openssl s_time -new`` with a device's certificate, a C client making new connections. Memory per held
connection: the hub's and Mosquitto's, and the swarm's holding them, each with the same devices held
with PINGREQ keepalive. Every ratio of the table in docs/benchmarks.md is printed from this one run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization

from bench.broker import INSTALL_HINT as MOSQUITTO_HINT
from bench.broker import Mosquitto, mosquitto_binary
from bench.measure import bench_cores, raw_verify_on_core
from bench.nginx import INSTALL_HINT as NGINX_HINT
from bench.nginx import Nginx, nginx_binary, s_time
from certstorm.processes import HubProcess, cpu_seconds, newest_summary
from devicekit.fleet import CA_FILE, CHAIN_FILE, generate_fleet
from devicekit.hubclient import HubClient
from devicekit.mqtts import MqttsClient, MqttsTarget
from loadgen import SWARM_DIR

COUNT = 400  # admissions per server case
CLIENTS = 4  # concurrent clients: enough to keep one server core busy
HELD = 1000  # devices held at once for the memory figures (a size a CI run affords)
SWARM_ADMISSIONS = 1500  # first connections the swarm makes for its CPU figure
CORES = bench_cores()


def _pin(pids, core) -> None:
    if core is not None:
        for pid in pids:
            os.sched_setaffinity(pid, {core})


def _client_prefix() -> tuple[str, ...]:
    return ("taskset", "-c", str(CORES[1])) if CORES is not None else ()


def _connect_all(client: MqttsClient, identities, sessions=None, *, http: bool = False) -> list:
    """Admit every identity over CLIENTS threads: MQTT CONNECT/CONNACK then DISCONNECT, or with ``http``
    one GET after the handshake (a plain TLS server); returns the sessions to resume, in order."""
    sessions = sessions or [None] * len(identities)
    out = [None] * len(identities)

    def run(part):
        for i in part:
            ident = identities[i]
            if http:
                connection = client.open(ident.chain_der(), ident.private_key)
                connection.send(b"GET / HTTP/1.0\r\n\r\n")
                assert connection.receive().startswith(b"HTTP/1.1 200"), "nginx refused the device"
                connection.close(disconnect=False)
                continue
            connection = client.connect(ident.device_id, ident.chain_der(), ident.private_key, session=sessions[i])
            out[i] = connection.session()
            connection.close()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(run, [range(k, len(identities), CLIENTS) for k in range(CLIENTS)]))
    return out


class Cases:
    """Server cases one after the other, each bracketed by verifies on the server core; the floor every
    case is divided by is the median of all those verifies (one floor keeps the cases in proportion)."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.verifies: list[float] = []
        self.core = CORES[0] if CORES is not None else None

    def measure(self, name: str, pids, work) -> None:
        self.verifies.append(raw_verify_on_core(self.core))
        cpu0 = cpu_seconds(pids)
        work()
        self.spent[name] = cpu_seconds(pids) - cpu0
        self.verifies.append(raw_verify_on_core(self.core))

    @property
    def floor(self) -> float:
        return 2 * statistics.median(self.verifies)

    def us(self, name: str) -> float:
        return self.spent[name] / COUNT * 1e6


def _uss(pids) -> int:
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            total += sum(p.memory_full_info().uss for p in (proc, *proc.children(recursive=True)))
        except psutil.Error:
            pass
    return total


def _swarm(args: list[str], results: Path) -> subprocess.Popen:
    cmd = [
        *_client_prefix(),
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(SWARM_DIR),
        "--headless",
        "--only-summary",
        *args,
        "--results-dir",
        str(results),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def swarm_cpu_per_admission(hub: HubProcess, fleet_dir: Path, results: Path) -> float:
    """The Locust swarm's own CPU seconds per mTLS admission (its measured window, start-up left out): one
    process, closed loop, first connections of a fleet the hub has not seen."""
    proc = _swarm(
        [
            "--host",
            hub.mqtts_url,
            "--hub-url",
            hub.url,
            "--tls-ca",
            hub.tls_ca,
            "--admin-token-file",
            hub.admin_token_path,
            "--fleet",
            str(fleet_dir),
            "--passes",
            "1",
            "-u",
            "16",
            "-r",
            "16",
            "-t",
            "120",
        ],
        results,
    )
    proc.wait(180)
    summary = newest_summary(results)
    [cpu] = summary["generator_cpu"].values()
    return cpu["window_cpu_s"] / summary["authentications"]["admitted"]


def _admitted(live: Path) -> int:
    if not live.exists():
        return 0
    records = (json.loads(line) for line in live.read_text().splitlines() if line.strip())
    return sum(r["admitted"] for r in records if r.get("kind") == "second")


def held_memory(server_pids, target_args: list[str], fleet_dir: Path, results: Path) -> tuple[float, float]:
    """KiB per held connection of the server and of the swarm holding them. The server: memory (USS) with
    HELD devices held against before they connected. The swarm: a swarm holding them against the same
    swarm whose devices left at once, each read two seconds after its last admission."""
    server0 = _uss(server_pids)
    out = []
    results.mkdir(parents=True, exist_ok=True)
    for hold in ("60", "0.001"):
        live = results / f"live-{hold}.jsonl"
        proc = _swarm(
            [
                *target_args,
                "--fleet",
                str(fleet_dir),
                "--devices",
                str(HELD),
                "--passes",
                "1",
                "--hold",
                hold,
                "-u",
                "32",
                "-r",
                "32",
                "-t",
                "30",
                "--mqtt-keepalive",
                "30",
                "--live-file",
                str(live),
            ],
            results / hold,
        )
        try:
            deadline = time.monotonic() + 25
            while _admitted(live) < HELD and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)
            out.append((_uss(server_pids), _uss([proc.pid])))
        finally:
            proc.terminate()
            proc.wait(30)
    (server_held, swarm_held), (_, swarm_left) = out
    return (server_held - server0) / HELD / 1024, (swarm_held - swarm_left) / HELD / 1024


def test_mtls_admission_against_c_servers_and_a_c_client(benchmark, tmp_path):
    for binary, hint in ((mosquitto_binary(), MOSQUITTO_HINT), (nginx_binary(), NGINX_HINT)):
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"missing in CI: {hint}")
            pytest.skip(hint)
    fleet_dir = tmp_path / "fleet"
    fleet = generate_fleet(fleet_dir, 3 * COUNT + 10, progress=False)
    generate_fleet(tmp_path / "swarm-fleet", SWARM_ADMISSIONS, progress=False)
    ids = [fleet.identity(i) for i in range(3 * COUNT + 10)]
    warm, tls_ids, full_ids, other_ids = ids[:10], ids[10 : 10 + COUNT], ids[10 + COUNT : 10 + 2 * COUNT], ids[-COUNT:]
    cases = Cases()
    figures: dict[str, float] = {}

    def run():
        for mode in ("cached", "full"):
            with HubProcess(
                tmp_path / f"hub-{mode}.db", workers=1, args=("--mqtts-port", "0", "--mqtts-validation", mode)
            ) as hub:
                pids = hub.healthz()["workers"]
                _pin([hub.proc.pid, *pids], cases.core)
                HubClient(hub.url, token=hub.admin_token()).ensure_ca(fleet.custodian())
                client = MqttsClient(MqttsTarget.from_url(hub.mqtts_url, ca_file=hub.tls_ca))
                _connect_all(client, warm[:2])
                if mode == "cached":
                    sessions = []
                    cases.measure("hub cached", pids, lambda c=client, s=sessions: s.extend(_connect_all(c, tls_ids)))
                    cases.measure("hub resumed", pids, lambda c=client, s=sessions: _connect_all(c, tls_ids, s))
                    figures["swarm_cpu_us"] = 1e6 * swarm_cpu_per_admission(
                        hub, tmp_path / "swarm-fleet", tmp_path / "swarm-cpu"
                    )
                    figures["hub_held_kib"], figures["swarm_held_kib"] = held_memory(
                        pids, ["--host", hub.mqtts_url, "--tls-ca", hub.tls_ca], fleet_dir, tmp_path / "held-hub"
                    )
                else:
                    cases.measure("hub full", pids, lambda c=client: _connect_all(c, full_ids))
        with Mosquitto(tmp_path / "mosquitto", fleet.ca_certificate) as broker:
            _pin([broker.pid], cases.core)
            client = MqttsClient(MqttsTarget.from_url(broker.url, ca_file=broker.server_ca))
            _connect_all(client, warm[2:3])
            cases.measure("mosquitto", [broker.pid], lambda: _connect_all(client, other_ids))
            figures["mosquitto_held_kib"], figures["swarm_held_mosquitto_kib"] = held_memory(
                [broker.pid],
                ["--host", broker.url, "--tls-ca", str(broker.server_ca)],
                fleet_dir,
                tmp_path / "held-mosquitto",
            )
        trusted = (fleet_dir / CA_FILE).read_bytes() + (fleet_dir / CHAIN_FILE).read_bytes()
        with Nginx(tmp_path / "nginx", trusted) as server:
            _pin([server.pid], cases.core)
            client = MqttsClient(MqttsTarget(server.host, server.port, ca_file=server.server_ca))
            _connect_all(client, warm[3:4], http=True)
            cases.measure("nginx", [server.pid], lambda: _connect_all(client, other_ids, http=True))
            device = ids[5]
            cert, key = tmp_path / "device.pem", tmp_path / "device.key"
            cert.write_bytes(device.chain_pem())
            key.write_bytes(
                device.private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            figures["s_time_per_cpu_s"] = s_time(server, cert, key, seconds=5, prefix=_client_prefix())

    benchmark.pedantic(run, rounds=1, iterations=1)
    floor = cases.floor
    hub = {name: cases.us(name) for name in ("hub cached", "hub full", "hub resumed")}
    nginx, mosquitto = cases.us("nginx"), cases.us("mosquitto")
    swarm_rate = 1e6 / figures["swarm_cpu_us"]
    rows = [
        ("hub mTLS cached vs nginx", hub["hub cached"], nginx, "≤ 1"),
        ("hub mTLS cached vs full", hub["hub cached"], hub["hub full"], "≤ 0.75"),
        ("hub mTLS full vs nginx", hub["hub full"], nginx, ""),
        ("hub mTLS resumed vs cached", hub["hub resumed"], hub["hub cached"], ""),
        ("hub mTLS cached vs Mosquitto", hub["hub cached"], mosquitto, ""),
        ("swarm admissions/core-s vs s_time", swarm_rate, figures["s_time_per_cpu_s"], "≥ 1"),
        ("hub KiB per held connection vs Mosquitto", figures["hub_held_kib"], figures["mosquitto_held_kib"], "≤ 1"),
        ("swarm KiB per held connection vs Mosquitto", figures["swarm_held_kib"], figures["mosquitto_held_kib"], "≤ 1"),
    ]
    ratios = {name: round(a / b, 3) for name, a, b, _ in rows}
    # the regression gate's cost: the hub's cached-mode CPU per admission, in verifies on its core
    verifies = round(hub["hub cached"] / (floor * 1e6 / 2), 4)
    benchmark.extra_info.update(
        verifies=verifies,
        verifies_min=verifies,
        ratios=ratios,
        floor_us=round(floor * 1e6, 1),
        server_cpu_us={
            **{k: round(v, 1) for k, v in hub.items()},
            "nginx": round(nginx, 1),
            "mosquitto": round(mosquitto, 1),
        },
        swarm_cpu_us=round(figures["swarm_cpu_us"], 1),
        swarm_admissions_per_core_second=round(swarm_rate),
        s_time_connections_per_user_cpu_second=figures["s_time_per_cpu_s"],
        held_kib={k: round(v, 1) for k, v in figures.items() if k.endswith("_kib")},
        held_connections=HELD,
        admissions_per_case=COUNT,
        floor_verifies_us=[round(v * 1e6, 1) for v in cases.verifies],
    )
    print(
        f"\nmTLS admission, {COUNT} devices per server case on one server core; two-verify floor {floor * 1e6:.0f} µs"
    )
    for name in (*hub, "nginx", "mosquitto"):
        us = cases.us(name)
        print(f"  {name:12s} {us:7.0f} µs of server CPU = {us / floor / 1e6:5.2f}x the floor")
    print(
        f"  swarm {figures['swarm_cpu_us']:.0f} µs per admission = {swarm_rate:,.0f} per core-second; "
        f"openssl s_time {figures['s_time_per_cpu_s']:,.0f} connections per user CPU-second"
    )
    print(
        "  KiB per held connection ("
        + ", ".join(f"{k} {v:.1f}" for k, v in figures.items() if k.endswith("_kib"))
        + f"; {HELD} held)"
    )
    for name, a, b, goal in rows:
        print(f"  {name:45s} {a / b:6.2f}" + (f"   goal {goal}" if goal else ""))
    print("  " + json.dumps(ratios))
