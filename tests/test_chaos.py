"""Faults, at CI size: the scenarios of tests/chaos.py (``make chaos`` runs them at full size).

* one worker killed with SIGKILL during a storm: the other keeps serving, the supervisor replaces it,
  every device gets in and is on record with its authentications;
* the whole hub killed with SIGKILL during a storm and started again on the same database: every
  acknowledged administrative write and every acknowledged admission is on record, the audit log holds
  exactly the acknowledged changes (and at most the calls whose answers were lost in the kill), the
  storm finishes through backoff, no device request fails once the hub answers again, and the recovery
  time is printed;
* Technician-Z's certificate revoked mid-run: its devices are refused from the next request on, by every
  worker, and no device of Technician-W (also under Factory-Y) is refused; the registry holds no
  admission of a Technician-Z device after the revocation.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json

import chaos
import pytest


def _show(name: str, figures: dict) -> None:
    print(f"\n{name}: {json.dumps(figures)}")


def test_a_worker_killed_during_a_storm_is_replaced_while_the_other_serves(tmp_path):
    figures = chaos.worker_kill(tmp_path, devices=240, threads=8, rounds=3)
    _show("worker kill", figures)
    assert figures["admissions"] == 240 * 3


def test_the_whole_hub_killed_during_a_storm_loses_nothing_acknowledged(tmp_path):
    figures = chaos.hub_kill(tmp_path, devices=240, threads=8, rounds=3)
    _show("hub kill", figures)
    # chaos.hub_kill checks what is stored and that nothing failed once the hub answered again.
    assert figures["acknowledged_cas"] >= 3 and figures["acknowledged_revocations"] >= 3
    assert figures["admissions_acknowledged_before_kill"] > 0, figures


def test_a_revoked_technician_is_refused_at_once_by_every_worker_and_nobody_else_is(tmp_path):
    figures = chaos.revoke_technician(tmp_path, per_technician=60, threads=8)
    _show("revoke Technician-Z", figures)
    assert figures["z_refusals_after_revocation"] > 0 and figures["w_admissions"] > 0


@pytest.mark.slow
def test_full_size_chaos(tmp_path):
    """What `make chaos` runs, as a test: bigger storms."""
    for name, run in (("worker", chaos.worker_kill), ("hub", chaos.hub_kill)):
        workdir = tmp_path / name
        workdir.mkdir()
        _show(name, run(workdir, devices=1000, threads=16, rounds=3))
    workdir = tmp_path / "revoke"
    workdir.mkdir()
    _show("revoke", chaos.revoke_technician(workdir, per_technician=500, threads=16))
