"""The swarm's provisioning step (``--dps``): a storm of devices coming online through DPS and then
connecting to the hub DPS assigned, then a re-provisioning storm of the same devices; the summary says
where the devices went and how fairly. Bad provisioning options stop the swarm at once."""

from __future__ import annotations

import contextlib

import pytest
from conftest import serve_hub
from test_swarm import swarm

from certstorm.processes import DpsProcess
from devicekit.fleet import derive_fleet

pytestmark = pytest.mark.slow  # two swarm runs of a storm each

DEVICES = 40
HUB_NAMES = ("hub-a", "hub-b")


@pytest.fixture(scope="module")
def world(tmp_path_factory, cache):
    with contextlib.ExitStack() as stack:
        serving = [serve_hub(tmp_path_factory, name, workers=1, args=("--mqtts-port", "0")) for name in HUB_NAMES]
        hubs = {}
        for name, generator in zip(HUB_NAMES, serving):
            stack.enter_context(contextlib.closing(generator))
            hubs[name] = next(generator)
        dps = DpsProcess(tmp_path_factory.mktemp("dps") / "dps.db", workers=1, args=("--mqtts-port", "0"))
        stack.callback(dps.kill)
        dps.start()
        fleet = derive_fleet(DEVICES, cache_dir=str(cache))  # the swarm derives the same one (same seed)
        ca_id = dps.register_ca(fleet.custodian(), hubs.values())
        for name, hub in hubs.items():
            dps.link(hub, name)
        dps.enroll("swarm", ca_id, "evenly", HUB_NAMES)
        yield dps, hubs
        assert dps.stop() == 0, dps.log()
        for generator in serving:
            next(generator, None)


def dps_args(dps, hubs) -> list[str]:
    args = ["--dps", dps.mqtts_url, "--id-scope", dps.id_scope, "--dps-ca", dps.tls_ca, "--tls-version", "1.2"]
    for name, hub in hubs.items():
        args += ["--dps-hub", f"{name}={hub.mqtts_url}", "--dps-hub-ca", f"{name}={hub.tls_ca}"]
    return args


def test_a_provisioning_storm_then_a_re_provisioning_storm(world, cache, tmp_path):
    dps, hubs = world
    storm = ["--devices", str(DEVICES), "--shape", "storm", "--slots", "8", "-t", "60"]
    rc, s, out = swarm(None, tmp_path / "first", cache, *dps_args(dps, hubs), *storm, host=dps.mqtts_url)
    assert rc == 0, out[-4000:]
    assert s["authentications"]["admitted"] == DEVICES and s["authentications"]["failed_attempts"] == 0, s
    p = s["provisioning"]
    assert p["assigned"] == DEVICES and p["substatus"] == {"initialAssignment": DEVICES}, p
    assert set(p["spread"]["hubs"]) == set(HUB_NAMES) and p["spread"]["jain_index"] > 0.95, p
    assert s["latency_us"]["dps_register"]["count"] == DEVICES and s["latency_us"]["hub_connect"]["count"] == DEVICES
    assert s["locust"]["DPS register"]["failures"] == 0 and s["locust"]["MQTTS hub connack"]["requests"] == DEVICES
    for name, hub in hubs.items():  # each hub holds exactly the devices DPS assigned to it
        devices = [f"device-{i:06d}" for i in range(DEVICES)]
        held = [d for d in devices if hub.admin("GET", f"/devices/{d}").json().get("provisioned")]
        assert len(held) == p["spread"]["hubs"][name], name

    rc, again, out = swarm(None, tmp_path / "again", cache, *dps_args(dps, hubs), *storm, host=dps.mqtts_url)
    assert rc == 0, out[-4000:]
    assert again["provisioning"]["substatus"] == {"unchanged": DEVICES}
    assert again["provisioning"]["spread"]["hubs"] == p["spread"]["hubs"]


def test_provisioning_without_an_id_scope_stops_at_once(world, cache, tmp_path):
    dps, _hubs = world
    rc, out = _run_failing(cache, tmp_path, "--dps", dps.mqtts_url, host=dps.mqtts_url)
    assert rc == 2 and "--id-scope" in out, out[-2000:]


def _run_failing(cache, results, *args, host):
    from test_swarm import run_locust

    proc = run_locust(None, results, cache, "--devices", str(DEVICES), "-t", "10", *args, host=host, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr
