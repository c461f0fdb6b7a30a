"""The hostile corpus (tests/hostile/) against the real hub.

Two hubs, one after the other:

* two workers, with valid devices authenticating in the background all along: every case gets its
  exact refusal (status and code, as JSON), nothing gets a 5xx, no worker dies, the background traffic
  never fails, and afterwards no uploaded private key is in the database, the guard file or the logs;
* one worker, so that its CPU time is the cost of the case alone: no case may cost more than 50 ms of
  the worker's CPU, read in nanoseconds from the scheduler (psutil's 10 ms clock ticks only where
  that is unreadable). The costs are printed (pytest -s, or the summary in -rA); the largest is asserted.

The engine gaps the corpus found are fixed; each has an in-process regression test at the end. A
case the hub answers wrongly would carry ``engine_gap``/``cpu_gap`` in tests/hostile/corpus.py (a strict
xfail naming the fix); none does today.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from pathlib import Path

import pytest
from hostile import corpus
from hostile.wire import exchange

from certstorm.processes import HubProcess, cpu_seconds
from devicekit.httpdevice import HubError, authenticate, register_and_prove
from devicekit.pki import SupplyChain

CASES = corpus.cases()
CPU_BUDGET = 0.050
COSTS: dict[str, tuple[float, float]] = {}  # case -> (CPU seconds in clock ticks (psutil), from schedstat)


def _param(case: corpus.Case, gap: str | None):
    # Strict: a gap that stops failing is fixed, and its mark must go.
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    return pytest.param(case, id=case.name, marks=marks)


def cpu_ns(pids) -> int:
    """On-CPU nanoseconds of every thread of ``pids`` (/proc/<pid>/task/*/schedstat), or -1. Read by hand:
    psutil's CPU times come in 10 ms clock ticks, too coarse for one request."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return -1
    return total


class Traffic:
    """Valid devices authenticating over keep-alive connections while the corpus runs."""

    def __init__(self, hub: HubProcess, devices: int = 16, connections: int = 3):
        self.hub = hub
        self.chain = SupplyChain.build(depth=2)
        register_and_prove(hub, self.chain.company)
        self.devices = [self.chain.device(f"steady-{i}") for i in range(devices)]
        self.connections = connections
        self.admitted = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="valid-traffic", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        conns = [self.hub.connect() for _ in range(self.connections)]
        n = 0
        while not self._stop.is_set():
            i = n % len(conns)
            try:
                authenticate(conns[i], self.devices[n % len(self.devices)])
                self.admitted += 1
            except (HubError, OSError, ValueError) as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
                conns[i].close()
                conns[i] = self.hub.connect()
            n += 1
            time.sleep(0.004)
        for conn in conns:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def kit():
    return corpus.Kit()


def _start(tmp_path_factory, name: str, workers: int, kit) -> HubProcess:
    hub = HubProcess(tmp_path_factory.mktemp(name) / "hub.db", workers=workers).start()
    kit.prepare(hub)
    return hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory, kit):
    process = _start(tmp_path_factory, "hostile", 2, kit)
    process.pids = sorted(process.healthz()["workers"])
    process.traffic = Traffic(process).start()
    yield process
    process.traffic.stop()
    process.stop()
    process.kill()


@pytest.fixture(scope="module")
def solo(tmp_path_factory, kit):
    process = _start(tmp_path_factory, "hostile-cpu", 1, kit)
    process.pid = process.healthz()["workers"][0]
    yield process
    process.stop()
    process.kill()


# -- every case refused with its code, on a hub with two workers and live traffic ---------------------------
@pytest.mark.parametrize("case", [_param(c, c.engine_gap or c.hub_gap) for c in CASES])
def test_refused_with_its_code(hub, kit, case):
    reply = exchange(hub.host, hub.port, case.request(kit))
    status, code = case.expect
    assert reply.status < 500, reply
    assert reply.status == status, reply
    if code is not None:
        assert reply.headers.get("content-type", "").startswith("application/json"), reply
        doc = reply.json()
        assert doc["error"] == code, doc
        assert isinstance(doc.get("message"), str) and doc["message"], doc
    if case.stream:
        # Answered before the body was read, and the connection closed: the hub did not take 64 MiB.
        assert reply.sent < case.stream // 4, f"the hub read {reply.sent} of {case.stream} bytes"
        assert reply.closed, "the hub kept the connection open after refusing an oversized body"


def test_hub_stayed_up_and_valid_traffic_never_failed(hub):
    traffic = hub.traffic
    time.sleep(0.2)
    traffic.stop()
    assert traffic.admitted > 50, traffic.admitted
    assert not traffic.failures, traffic.failures[:5]
    assert sorted(hub.healthz()["workers"]) == hub.pids  # no worker died (none was replaced)
    log = hub.log()
    assert " ERROR " not in log, log[-3000:]  # an ERROR is a 500: a hub bug
    escapes = log.count("engine let a parse error of uploaded data escape")
    print(
        f"\nvalid authentications during the corpus: {traffic.admitted}, failures: 0; "
        f"parse errors the engine let escape (answered 4xx, logged): {escapes}"
    )


def _hub_files(hub: HubProcess) -> list[Path]:
    base = Path(hub.db)
    return [
        p
        for p in (
            base,
            Path(f"{base}-wal"),
            Path(f"{base}-shm"),
            Path(f"{base}.guard"),
            Path(f"{base}.stdout"),
            Path(f"{base}.stderr"),
        )
        if p.exists()
    ]


def _assert_no_secrets(hub: HubProcess, kit) -> int:
    assert kit.secrets, "the corpus uploaded no private key"
    checked = 0
    for path in _hub_files(hub):
        # Long runs of zeros (the unused part of the guard file's table, free database pages) cannot
        # hold a key; squeezing them makes the search over every needle fast.
        data = re.sub(rb"\x00{64,}", b"\x00", path.read_bytes())
        assert b"PRIVATE KEY" not in data.upper(), path
        for secret in kit.secrets:
            for needle in secret.needles:
                assert needle not in data, f"{secret.label} found in {path.name}"
                checked += 1
    return checked


def test_no_uploaded_private_key_is_stored_or_logged(hub, kit):
    _assert_no_secrets(hub, kit)  # while running: the WAL holds the latest pages
    assert hub.stop() == 0, hub.log()
    checked = _assert_no_secrets(hub, kit)
    names = ", ".join(p.name for p in _hub_files(hub))
    print(f"\n{len(kit.secrets)} uploaded keys, {checked} needle/file checks over {names}: none found")


# -- what each case costs the hub, one worker --------------------------------------------------------------
def _cost(ticks: float, precise: float) -> float:
    """The case's CPU: the scheduler's nanoseconds, or the clock ticks where /proc has no schedstat."""
    return ticks if math.isnan(precise) else precise


@pytest.mark.parametrize("case", [_param(c, c.hub_gap or c.cpu_gap) for c in CASES])
def test_costs_under_50ms_of_cpu(solo, kit, case):
    request = case.request(kit)  # built first: proofs take a live challenge from the hub
    time.sleep(0.01)
    pids = [solo.pid]
    ticks, ns = cpu_seconds(pids), cpu_ns(pids)
    reply = exchange(solo.host, solo.port, request)
    ticks, after = cpu_seconds(pids) - ticks, cpu_ns(pids)
    COSTS[case.name] = (ticks, (after - ns) / 1e9 if min(ns, after) >= 0 else float("nan"))
    assert 0 < reply.status < 500, reply
    spent = _cost(*COSTS[case.name])
    assert spent < CPU_BUDGET, f"{case.name} cost the hub {spent * 1e3:.2f} ms of CPU"


def test_cpu_summary(solo, kit):
    assert solo.healthz()["workers"] == [solo.pid]
    gaps = {c.name for c in CASES if c.cpu_gap or c.hub_gap}
    measured = {k: v for k, v in COSTS.items() if k not in gaps}
    assert len(measured) >= 50, len(measured)
    worst = sorted(measured.items(), key=lambda kv: kv[1][1], reverse=True)[:8]
    max_ticks = max(v[0] for v in measured.values())
    worst_cost = max(_cost(*v) for v in measured.values())
    print(f"\nCPU per hostile request, one worker, {len(measured)} cases (budget {CPU_BUDGET * 1e3:.0f} ms):")
    print(
        f"  max {worst_cost * 1e3:.2f} ms ({CPU_BUDGET / worst_cost:.0f}x under the budget); "
        f"by /proc ticks (10 ms resolution): {max_ticks * 1e3:.0f} ms"
    )
    for name, (t, precise) in worst:
        print(f"  {name:48s} {precise * 1e3:7.2f} ms (schedstat)  {t * 1e3:4.0f} ms (ticks)")
    for name, (_, precise) in COSTS.items():
        if name not in measured:
            print(f"  known gap {name}: {precise * 1e3:.1f} ms")
    assert worst_cost < CPU_BUDGET, worst_cost
    _assert_no_secrets(solo, kit)


# -- the engine gaps, in-process --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(kit):
    import chainkit as ck

    from hubsim import AuthEngine

    eng = AuthEngine(secret=b"k" * 32, clock=time.time, random=os.urandom)
    ck.trust(eng, kit.root)
    return eng


def _code(fn, *args):
    from hubsim import AuthError

    try:
        fn(*args)
    except AuthError as exc:
        return exc.code
    return "accepted"


def test_engine_refuses_unparseable_extensions_as_malformed(engine, kit):
    # cryptography raises DuplicateExtension / UnsupportedGeneralNameType, not ValueError, for these.
    from cryptography.x509 import load_pem_x509_certificates

    x400 = corpus.D.extension("2.5.29.17", corpus.D.seq(corpus.D.tlv(0xA3, corpus.D.seq())))
    for body in (corpus._duplicate_extension_leaf(kit), corpus._leaf_with_extension(kit, x400)):
        chain = [c.public_bytes(corpus.Enc.DER) for c in load_pem_x509_certificates(body)]
        assert _code(engine.begin, chain) == "malformed_input"
    for der in (corpus._duplicate_extension_ca(kit), corpus._edi_party_ca(kit)):
        assert _code(engine.register_ca, der) == "malformed_input"


def test_engine_calls_a_weak_intermediate_key_unsupported(engine, kit):
    # The verifier says "RSA key is too weak" for an intermediate; the engine names it precisely.
    from cryptography.x509 import load_pem_x509_certificates

    chain = [
        c.public_bytes(corpus.Enc.DER)
        for c in load_pem_x509_certificates(corpus._intermediate_with(kit, corpus._rsa(1024)))
    ]
    assert _code(engine.begin, chain) == "unsupported_algorithm"


def test_pkcs12_sniffing_runs_no_key_derivation(kit):
    # Parsing PKCS#12 verifies its MAC with the file's own iteration count (an attacker's choice):
    # the upload check must recognise it by shape alone, with no key derivation.
    from hubsim.upload import looks_like_private_key

    blob = corpus._pkcs12_costly_mac(kit, 1 << 20)
    start = time.process_time()
    found = looks_like_private_key(blob)
    spent = time.process_time() - start
    assert found and spent < CPU_BUDGET, (found, spent)


def test_engine_refuses_rsa_keys_with_huge_public_exponents(engine, kit):
    # A huge RSA public exponent makes each signature check cost a private-key operation: every
    # uploaded CA key is checked against the policy before the verifier runs.
    from cryptography.x509 import load_pem_x509_certificates

    chain = [
        c.public_bytes(corpus.Enc.DER)
        for c in load_pem_x509_certificates(
            corpus._deep_chain(kit, trusted=False, count=1, key_factory=lambda i: corpus._huge_exponent_rsa())
        )
    ]
    start = time.process_time()
    code = _code(engine.begin, chain)
    assert code == "unsupported_algorithm", (code, time.process_time() - start)
