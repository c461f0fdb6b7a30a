"""The device swarm end to end: ``locust -f loadgen`` headless against a real hub subprocess.

Checks: zero failures, every device distinct (from the swarm's summary and from the hub's registry), the
CA registered and proven once, each shape starts and stops, a throttled storm retries until every device
is in. About 35 s in all; the derived fleet is made once and shared through a fleet cache.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certstorm.processes import HubProcess

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
DEVICES = 400


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubProcess(tmp_path_factory.mktemp("hub") / "hub.db", workers=2) as h:
        yield h


def run_locust(
    hub,
    results: Path,
    cache: Path,
    *args: str,
    token_env: str | None = None,
    host: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess:
    """The swarm against ``hub`` (or ``host``, another URL such as a broker's or the hub's mqtts:// one); the
    operator's token comes in ``args`` or ``token_env``, nowhere else."""
    cmd = [
        LOCUST,
        "-f",
        "loadgen",
        "--headless",
        "--only-summary",
        "--host",
        host or hub.url,
        "--devices",
        str(DEVICES),
        "--fleet-cache",
        str(cache),
        "--results-dir",
        str(results),
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CERTSTORM_ADMIN_TOKEN", None)
    if token_env is not None:
        env["CERTSTORM_ADMIN_TOKEN"] = token_env
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def swarm(hub, results: Path, cache: Path, *args: str, host: str | None = None, timeout: float = 60.0):
    """Run the swarm with the hub's token file (none without a hub: a broker, or a fleet nobody registers);
    return (exit code, summary, output)."""
    token = ("--admin-token-file", hub.admin_token_path) if hub is not None else ()
    proc = run_locust(hub, results, cache, *token, *args, host=host, timeout=timeout)
    out = proc.stdout + proc.stderr
    runs = sorted(results.glob("*/summary.json"))
    assert runs, f"no summary written (exit {proc.returncode}):\n{out[-4000:]}"
    return proc.returncode, json.loads(runs[-1].read_text()), out


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_pass_over_the_fleet_with_two_processes(hub, cache, tmp_path):
    port = _free_port()  # Locust's master/worker channel defaults to 5557: another swarm may hold it
    rc, s, out = swarm(
        hub,
        tmp_path,
        cache,
        "--processes",
        "2",
        "--passes",
        "1",
        "-u",
        "16",
        "-r",
        "100",
        "-t",
        "30",
        "--master-bind-port",
        str(port),
        "--master-port",
        str(port),
    )
    assert rc == 0, out[-4000:]
    a = s["authentications"]
    assert a["admitted"] == DEVICES and a["failed_attempts"] == 0 and not a["failures_by_code"]
    assert s["devices"] == {
        "distinct_admitted": DEVICES,
        "first_pass_admissions": DEVICES,
        "duplicates_within_a_pass": 0,
        "all_distinct": True,
    }
    assert a["first_connection"] == DEVICES  # the hub saw each device for the first time, exactly once
    assert s["run"]["stride"] == 2 and s["reports"] == {"received": [0, 1], "missing": [], "complete": True}
    assert s["hub"]["ca"]["action"] == "registered"
    for name in ("challenge", "sign", "proof", "auth", "hub_chain", "hub_pop"):
        assert s["latency_us"][name]["count"] == DEVICES, name
    # Locust counts HTTP requests only: two per authentication, nothing for signing or the whole exchange
    assert set(s["locust"]) == {"POST challenge", "POST proof"}
    assert all(e["requests"] == DEVICES and e["failures"] == 0 for e in s["locust"].values())
    with open(tmp_path / s["run"]["run_id"] / "latency_us.csv") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert int(rows["auth"]["count"]) == DEVICES and float(rows["sign"]["p50_us"]) > 0
    assert set(s["generator_cpu"]) == {"0", "1"} and isinstance(s["generator_limited"], bool)
    assert (tmp_path / s["run"]["run_id"] / "histograms.npz").is_file()
    assert sorted(p.name for p in (tmp_path / s["run"]["run_id"]).glob("worker-*.json")) == [
        "worker-0.json",
        "worker-1.json",
    ]
    # the hub's registry agrees: one authentication per device, one verified CA
    for index in (0, 1, 199, DEVICES - 1):
        entry = hub.admin("GET", f"/devices/device-{index:06d}").json()
        assert entry["authentications"] == 1, entry
    cas = hub.admin("GET", "/cas").json()["cas"]
    assert [c["status"] for c in cas] == ["verified"]


def test_the_web_ui_offers_the_run_options_and_a_run_takes_them(hub, cache, tmp_path):
    import re
    import time
    import urllib.parse
    import urllib.request

    web = _free_port()
    given = tmp_path / "given-in-the-ui"  # a results directory set in the form, not on the command line
    # The token through the environment, as a container or CI secret would give it.
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        CERTSTORM_ADMIN_TOKEN=hub.admin_token(),
    )
    proc = subprocess.Popen(
        [
            LOCUST,
            "-f",
            "loadgen",
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(web),
            "--host",
            hub.url,
            "--devices",
            str(DEVICES),
            "--fleet-cache",
            str(cache),
            "--results-dir",
            str(tmp_path / "from-the-command-line"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the web UI did not come up"
                time.sleep(0.3)
        offered = json.loads(re.search(r'"extra_options": (\{.*?\}\}|\{\})', page).group(1))
        assert {"shape", "rate", "passes", "results_dir", "backoff"} <= set(offered)
        assert "fleet" not in offered and "devices" not in offered  # opened at start-up: not offered
        form = {
            "user_count": "8",
            "spawn_rate": "8",
            "host": hub.url,
            "shape": "closed",
            "passes": "1",
            "results_dir": str(given),
        }
        reply = urllib.request.urlopen(base + "/swarm", data=urllib.parse.urlencode(form).encode(), timeout=10)
        assert json.loads(reply.read())["success"] is True
        while not list(given.glob("*/summary.json")):
            assert proc.poll() is None and time.monotonic() < deadline + 60, "no summary from the UI's run"
            time.sleep(0.5)
        summary = json.loads(next(given.glob("*/summary.json")).read_text())
    finally:
        proc.terminate()
        err = proc.communicate(timeout=30)[1]
    assert summary["authentications"]["admitted"] == DEVICES, err[-3000:]
    assert summary["authentications"]["failed_attempts"] == 0 and summary["devices"]["all_distinct"]
    assert summary["options"]["passes"] == 1 and summary["options"]["results_dir"] == str(given)
    assert not (tmp_path / "from-the-command-line").exists()


def test_without_the_hubs_token_the_swarm_stops_and_says_what_it_needs(hub, cache, tmp_path):
    proc = run_locust(hub, tmp_path, cache, "--passes", "1", "-u", "2", "-t", "20")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "401 admin_token_missing" in out and "--admin-token-file" in out, out[-3000:]
    proc = run_locust(hub, tmp_path, cache, "--passes", "1", "-u", "2", "-t", "20", token_env="x" * 43)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "401 admin_token_invalid" in out, out[-3000:]
    proc = run_locust(hub, tmp_path, cache, "--admin-token-file", str(tmp_path / "nowhere"), "-t", "20")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and f"--admin-token-file {tmp_path / 'nowhere'}: No such file" in out, out[-3000:]


@pytest.mark.parametrize(
    "shape,args,seconds",
    [
        ("steady", ["--rate", "150", "-t", "3"], 3),
        ("step", ["--rate", "50", "--step-rate", "100", "--step-seconds", "1.5", "--steps", "2"], 3),
        ("storm", ["--storm-devices", "300", "--slots", "30", "-t", "20"], None),
        ("churn", ["--churn-stay", "0.5", "--churn-away", "0.5", "--slots", "10", "-t", "3"], 3),
    ],
)
def test_each_shape_starts_and_stops(hub, cache, tmp_path, shape, args, seconds):
    rc, s, out = swarm(hub, tmp_path, cache, "--shape", shape, *args)
    assert rc == 0, out[-4000:]
    assert "Shape test completed" in out
    a = s["authentications"]
    assert a["admitted"] > 0 and a["failed_attempts"] == 0, a
    assert s["devices"]["duplicates_within_a_pass"] == 0
    # every run derives the same seeded CA: registered and proven by the first run on this hub, then reused
    assert s["hub"]["ca"]["action"] in ("registered", "already verified")
    assert len(hub.admin("GET", "/cas").json()["cas"]) == 1
    if seconds is not None:
        assert seconds - 0.5 <= s["run"]["duration_s"] <= seconds + 2.5, s["run"]
    if shape in ("steady", "step"):
        phases = s["rates"]["phases"]
        assert [p["target_rate"] for p in phases] == ([150.0] if shape == "steady" else [50.0, 150.0])
        assert s["latency_us"]["auth_from_intended"]["count"] == a["admitted"]
        assert phases[-1]["achieved_rate"] > 0.5 * phases[-1]["target_rate"]
    if shape == "storm":
        assert a["admitted"] == 300 and s["devices"]["distinct_admitted"] == 300
        assert s["admission_curve"]["time_to_100pct_s"] is not None
    if shape == "churn":
        assert a["reconnects"] > 0 and s["devices_online"]["peak"] > 0


def test_throttled_storm_retries_until_every_device_is_admitted(cache, tmp_path):
    with HubProcess(tmp_path / "quota.db", workers=1, args=("--quota", "150")) as h:
        rc, s, _out = swarm(
            h,
            tmp_path / "res",
            cache,
            "--shape",
            "storm",
            "--storm-devices",
            "300",
            "--slots",
            "40",
            "--backoff",
            "aws-crt",
            "-t",
            "30",
        )
    assert rc == 1  # Locust counts the 429s as failed requests
    a = s["authentications"]
    assert a["admitted"] == 300 and a["gave_up"] == 0 and s["devices"]["all_distinct"]
    assert a["retries"] > 0 and set(a["failures_by_code"]) == {"challenge:throttled"}
    assert a["retries"] == a["failed_attempts"]
    curve = s["admission_curve"]
    assert curve["admitted_cumulative"][-1] == 300 and sum(curve["refused"]) == a["retries"]
    assert curve["time_to_100pct_s"] >= 1.0  # 300 devices through a 150/s bucket take over a second
    assert s["backoff"]["preset"] == "aws-crt"


# --- the swarm's options ------------------------------------------------------------------------------------
def test_the_swarm_options_are_added_once_per_parser_and_the_run_options_offered_in_the_web_ui():
    # in a subprocess: importing locust monkey-patches the process for gevent
    code = (
        "import json\n"
        "from locust.argument_parser import get_parser, ui_extra_args_dict\n"
        "from locust import events\n"
        "from loadgen import add_arguments\n"
        "parser = get_parser()\n"
        "add_arguments(parser)\n"
        "add_arguments(parser)\n"  # the locustfile and certstorm swarm may both ask
        "events.init_command_line_parser.add_listener(add_arguments)\n"
        "print(json.dumps([parser.parse_args(['--shape', 'storm']).shape, sorted(ui_extra_args_dict([]))]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shape, in_web_ui = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shape == "storm"
    from loadgen import RUN_OPTIONS

    assert set(in_web_ui) == set(RUN_OPTIONS)  # the fleet, opened at start-up, is not offered
    assert {"shape", "rate", "backoff", "storm_devices", "results_dir", "hub_url"} <= set(in_web_ui)


def test_a_run_takes_its_options_from_the_locustfile():
    # under plain locust only loadgen/swarm.py registers them: a bad value is argparse's "invalid choice",
    # not "unrecognized arguments"
    proc = subprocess.run(
        [LOCUST, "-f", "loadgen", "--headless", "--shape", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "invalid choice: 'nonsense'" in proc.stderr


def test_first_device_starts_the_run_there_and_wraps_around(tmp_path):
    """One slot, one pass over 30 devices from device 25: device 25 is the hub's first sight, device 24 its
    last, and every device is admitted once (what lets runs one after another bring devices the hub has not
    seen yet)."""
    with HubProcess(tmp_path / "hub.db", workers=1) as hub:
        rc, s, out = swarm(
            hub,
            tmp_path / "results",
            tmp_path / "cache",
            "--devices",
            "30",
            "--first-device",
            "25",
            "--passes",
            "1",
            "-u",
            "1",
            "-r",
            "10",
            "-t",
            "60",
        )
        assert rc == 0, out[-3000:]
        assert s["devices"]["distinct_admitted"] == 30 and s["devices"]["duplicates_within_a_pass"] == 0
        token = hub.admin_token()
        seen = {i: hub.call("GET", f"/devices/device-{i:06d}", token=token).json()["first_seen"] for i in range(30)}
    order = sorted(seen, key=seen.get)
    assert order[0] == 25 and order[-1] == 24 and order[:5] == [25, 26, 27, 28, 29], order


SENT_STATS_CHECK = """
from locust.env import Environment
from locust.stats import setup_distributed_stats_event_listeners

from loadgen._finish import _locust_stats, keep_sent_stats

env = Environment()
setup_distributed_stats_event_listeners(env.events, env.stats)  # Locust's own, as a worker has it
sent = keep_sent_stats(env)


def requests(n, failed=0):  # as a runner's request listener logs them
    for i in range(n):
        env.stats.log_request("POST", "proof", 5, 0)
        if i < failed:
            env.stats.log_error("POST", "proof", RuntimeError("refused"))


requests(7, failed=1)
env.events.report_to_master.fire(client_id="w", data={})
assert env.stats.entries[("proof", "POST")].num_requests == 0  # Locust emptied it
requests(3)
env.events.report_to_master.fire(client_id="w", data={})
requests(2)
[entry] = _locust_stats(env.stats, sent).values()
assert (entry["requests"], entry["failures"], entry["p50_ms"]) == (12, 1, 5), entry
assert _locust_stats(env.stats)["POST proof"]["requests"] == 2  # without what was sent: the bug
"""


def test_a_workers_locust_counts_include_what_it_already_sent_to_the_master():
    """Locust empties a worker's entries each time it reports to the master (every 3 s): the worker's own
    count must add what it sent, or a run longer than 3 s under-counts. (In a process of its own: importing
    Locust monkey-patches the interpreter.)"""
    proc = subprocess.run([sys.executable, "-c", SENT_STATS_CHECK], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
