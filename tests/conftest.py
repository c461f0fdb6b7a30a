"""Shared fixtures' building blocks."""

from __future__ import annotations

import os

import pytest
from tokenkit import softhsm  # noqa: F401 - SoftHSM2 tokens in a temporary directory, for any test module

from certstorm.processes import HubProcess
from devicekit.httpdevice import authenticate, register_and_prove
from devicekit.pki import SupplyChain


def serve_hub(tmp_path_factory, name: str = "hub", *, workers: int = 2, args=(), clean_log: bool = True):
    """Run a real hub for a module's tests; it must stop cleanly, and (unless told otherwise) its log must
    hold no ERROR line. Closed early (the generator's close(), e.g. by contextlib.closing after a failure),
    it still stops the hub, without judging it."""
    process = HubProcess(tmp_path_factory.mktemp(name) / "hub.db", workers=workers, args=tuple(args)).start()
    try:
        yield process
    except GeneratorExit:
        try:
            process.stop()
        finally:
            process.kill()
        raise
    try:
        assert process.stop() == 0, process.log()
    finally:
        process.kill()
    if clean_log:
        assert " ERROR " not in process.log(), process.log()


def admit_a_sibling_on_every_worker(hub: HubProcess, chain: SupplyChain) -> None:
    """One device under ``chain``'s issuer admitted through each worker, which caches its intermediates."""
    tag = os.urandom(4).hex()  # device ids are global: a sibling of another chain must not be this one
    for pid, conn in hub.worker_connections().items():
        try:
            before = hub.healthz(conn)["issuer_cache"]
            assert authenticate(conn, chain.device(f"sibling-{tag}-on-{pid}"))["first_connection"]
            after = hub.healthz(conn)
            assert after["pid"] == pid and (after["issuer_cache"] > before or not chain.custodians), (before, after)
        finally:
            conn.close()


@pytest.fixture(params=["empty-cache", "sibling-accepted"])
def issuers(request, hub):
    """Fresh supply chains, registered and proven on the module's ``hub``, for a refusal test that runs
    twice: with nothing under the chain seen before, and after a sibling device under the same issuer was
    admitted by every worker, so that no refusal can depend on what the workers have cached."""

    def issue(depth: int = 2) -> SupplyChain:
        chain = SupplyChain.build(depth=depth)
        register_and_prove(hub, chain.company)
        if request.param == "sibling-accepted":
            admit_a_sibling_on_every_worker(hub, chain)
        return chain

    return issue


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fleet cache for the swarm's derived fleets, shared by a module's tests."""
    return tmp_path_factory.mktemp("fleet-cache")
