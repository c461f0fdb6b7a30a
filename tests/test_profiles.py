"""Device and network profiles: bad names refused with the known ones listed; each class's distribution
matches its sources' figures; a mix gives each device one class, in the mix's shares; the waits cost no
CPU; the storm simulator keeps attempts in flight as Little's law says; and, against a real hub, the
swarm's in-flight count is what Little's law predicts from the profile, and the hub counts the TLS
handshakes it holds."""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_hub

from certstorm.capacity.handshakes import handshake_memory, parse_hold_metrics
from certstorm.capacity.planner import simulate_storm
from devicekit.profiles import DEVICE_CLASSES, NETWORKS, Profile, device_profile, parse_mix

ROOT = Path(__file__).resolve().parent.parent


# -- refusals first --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, needle",
    [
        ("quantum-chip", "device class 'quantum-chip' does not exist; the known ones are software, secure-element"),
        ("tpm:30,teapot:70", "'teapot' does not exist"),
        ("tpm:0", "positive share"),
        ("tpm:-5,secure-element:10", "positive share"),
        ("tpm:abc", "positive share"),
        ("tpm,secure-element", "positive share"),
        ("tpm:10,tpm:20", "named twice"),
        ("", "is empty"),
    ],
)
def test_a_profile_that_does_not_exist_or_does_not_add_up_is_refused(text, needle):
    with pytest.raises(ValueError) as info:
        parse_mix(text, DEVICE_CLASSES, "device class")
    assert needle in str(info.value)


def test_the_commands_refuse_an_unknown_profile_in_one_line_listing_the_known_ones():
    for flag, value, known in (("--device-profile", "tpm:50,fpga:50", DEVICE_CLASSES), ("--network", "5g", NETWORKS)):
        proc = subprocess.run(
            [sys.executable, "-m", "certstorm", "run", flag, value],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and flag in lines[0] and "Traceback" not in proc.stderr, proc.stderr
        assert all(name in lines[0] for name in known), lines[0]


# -- the distributions are their sources' ----------------------------------------------------------------
def test_each_class_draws_what_its_sources_say():
    rng = random.Random(7)
    n = 60_000
    draws = {name: [k.latency.draw(rng) for _ in range(n)] for name, k in {**DEVICE_CLASSES, **NETWORKS}.items()}
    assert max(draws["software"]) == 0 and max(draws["loopback"]) == 0
    se = draws["secure-element"]
    assert min(se) >= 0.065 and max(se) <= 0.115  # OPTIGA Trust M typical .. ATECC608 wait
    tpm = np.array(draws["tpm"])
    assert np.median(tpm) == pytest.approx(0.200, rel=0.03) and np.percentile(tpm, 95) == pytest.approx(0.600, rel=0.05)
    card = draws["smart-card"]
    assert min(card) >= 0.241 and max(card) <= 0.392
    token = draws["hsm-token"]
    assert min(token) >= 0.114 and max(token) <= 0.146
    wifi = np.array(draws["wifi"])
    assert np.median(wifi) == pytest.approx(0.020, rel=0.05) and np.percentile(wifi, 90) == pytest.approx(0.1, rel=0.06)
    assert min(draws["lte-m"]) >= 0.010 and max(draws["lte-m"]) <= 0.015
    nb = draws["nb-iot"]
    assert min(nb) >= 0.1 and max(nb) <= 8.0
    for name, kind in {**DEVICE_CLASSES, **NETWORKS}.items():  # the analytic mean is the sample's
        assert statistics.fmean(draws[name]) == pytest.approx(kind.latency.mean, rel=0.03, abs=1e-9), name
        sampled = kind.latency.sample(n, np.random.default_rng(3))
        assert float(sampled.mean()) == pytest.approx(kind.latency.mean, rel=0.03, abs=1e-9), name


def test_a_mix_gives_each_device_one_class_in_the_mix_shares():
    profile = Profile.parse("secure-element:70,tpm:30", "wifi:50,lte-m:50")
    for n in (10, 997, 20_000):
        classes = Counter(profile.device_class(i).name for i in range(n))
        networks = Counter(profile.network_of(i).name for i in range(n))
        assert abs(classes["secure-element"] - 0.7 * n) <= 1 and abs(networks["wifi"] - 0.5 * n) <= 1, (n, classes)
    again = Profile.parse("secure-element:7,tpm:3", "wifi:1,lte-m:1")
    assert [again.device_class(i) for i in range(50)] == [profile.device_class(i) for i in range(50)]
    assert device_profile("TPM:3, secure-element:1") == "tpm:75,secure-element:25"
    assert profile.attempt_seconds("http") == pytest.approx(2 * profile.network.mean + profile.devices.mean)
    assert profile.attempt_seconds("mqtts") == pytest.approx(3 * profile.network.mean + profile.devices.mean)
    assert Profile.from_json(profile.to_json()) == profile


def test_the_latency_is_waited_not_computed():
    """Fifty devices waiting their TPM signatures at once take about the longest wait in wall time and
    next to no CPU."""
    code = """
import json, time, gevent
from devicekit.profiles import Profile
from loadgen._device import Waits
class Rec:
    waited = {"sign": [0.0, 0], "rtt": [0.0, 0]}
waits = Waits(Profile.parse("tpm", "loopback"), Rec())
wall, cpu = time.perf_counter(), time.process_time()
gevent.joinall([gevent.spawn(waits.sign, i) for i in range(50)])
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "waited": Rec.waited["sign"]}))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    total, count = out["waited"]
    assert count == 50 and total > 50 * 0.1  # fifty TPM signatures' worth of waiting, about 12 s in all ...
    assert out["wall"] < total / 5  # ... spent side by side
    assert out["cpu"] < 0.05 * out["wall"] + 0.02  # and not by the CPU


# -- the simulator ---------------------------------------------------------------------------------------
def fixed(delay):
    return lambda retries, prev, rng: np.full(retries.size, delay)


def test_the_simulated_in_flight_counts_follow_littles_law():
    """Devices arriving evenly at 100/s, a hub with room for all: L = λW on both sides."""
    for transport in ("http", "mqtts"):
        profile = Profile.parse("secure-element:70,tpm:30", "lte-m")
        result = simulate_storm(
            6000, capacity=1000, backoff=fixed(1.0), spread=60.0, profile=profile, transport=transport, seed=4
        )
        assert result.admitted == 6000 and result.refusals == 0
        window = slice(1000, 5500)  # 10 s to 55 s: steady arrivals, in 0.01 s buckets
        device = result.curve_in_flight[window].mean()
        hub = result.curve_hub_in_flight[window].mean()
        assert device == pytest.approx(100 * profile.attempt_seconds(transport), rel=0.05), transport
        assert hub == pytest.approx(100 * profile.hub_holds_seconds(), rel=0.05), transport


def test_slow_devices_take_longer_to_come_back_and_hold_the_hub_longer():
    backoff = fixed(1.0)
    quick = simulate_storm(3000, 500, backoff, profile=Profile.parse(), transport="mqtts", seed=1)
    slow = simulate_storm(3000, 500, backoff, profile=Profile.parse("tpm", "lte-m"), transport="mqtts", seed=1)
    plain = simulate_storm(3000, 500, backoff, seed=1)
    assert quick.admitted == slow.admitted == plain.admitted == 3000
    assert quick.time_to_admit == pytest.approx(plain.time_to_admit, rel=0.15)  # no waits: the plain model
    assert quick.curve_in_flight.max() == 0 and slow.curve_hub_in_flight.max() > 0
    assert slow.time_to_fraction(0.5) > quick.time_to_fraction(0.5)


# -- against a real hub ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    yield from serve_hub(tmp_path_factory, "profiles", workers=1, args=("--mqtts-port", "0"))


@pytest.mark.slow  # an 11 s swarm run; the simulator's Little's law test above runs in make test
def test_the_swarm_keeps_the_in_flight_count_littles_law_predicts(hub, cache, tmp_path):
    rate, profile = 40.0, Profile.parse("secure-element:60,smart-card:40", "lte-m")
    cmd = [
        sys.executable, "-m", "certstorm", "swarm", "--headless", "--only-summary", "--host", hub.url,
        "--admin-token-file", hub.admin_token_path, "--devices", "800", "--fleet-cache", str(cache),
        "--shape", "steady", "--rate", str(rate), "--arrivals", "uniform", "--slots", "40", "-t", "11s",
        "--device-profile", "secure-element:60,smart-card:40", "--network", "lte-m", "--results-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads(sorted(tmp_path.glob("*/summary.json"))[-1].read_text())
    flight = summary["in_flight"]
    achieved = summary["rates"]["phases"][0]["achieved_rate"]
    measured = statistics.fmean(v for v in flight["mean"][20:-15] if v is not None)  # 2 s in, to 1.5 s before the end
    predicted = achieved * profile.attempt_seconds("http")
    assert measured == pytest.approx(predicted, rel=0.10), (measured, predicted, flight["mean_attempt_s"])
    assert flight["waited"]["sign"]["count"] == summary["authentications"]["admitted"]
    assert flight["waited"]["rtt"]["count"] == 2 * summary["authentications"]["admitted"]


def test_the_hub_counts_and_weighs_the_tls_handshakes_it_holds(hub):
    from OpenSSL import SSL

    from certstorm.capacity import handshakes

    def held() -> dict:
        time.sleep(0.5)  # each worker publishes its counts every 0.2 s
        return parse_hold_metrics(hub.call("GET", "/metrics").body.decode())

    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_verify(SSL.VERIFY_NONE, None)
    stalled = [handshakes._stall(hub.host, hub.mqtts_port, context, 5.0) for _ in range(5)]
    try:
        assert held()["handshakes"] == 5
    finally:
        for s in stalled:
            s.close()
    assert held()["handshakes"] == 0
    memory = handshake_memory(hub.host, hub.mqtts_port, hub.proc.pid, step=200, levels=3)
    assert memory is not None and memory["kib_per_handshake"] > 1 and memory["points"][-1][0] == 600
    assert math.isfinite(memory["r2"])
