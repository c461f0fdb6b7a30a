"""The ``certstorm`` command as its user meets it: whole help texts, one-line argument errors naming the
argument and what is allowed (exit 2, no traceback), a fleet that is not silently replaced, a hub that
leaves nothing in the current directory, and the swarm run from an installed package in any directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certstorm.cli import COMMANDS, build_parser
from certstorm.processes import HubProcess
from devicekit.fleet import Fleet, generate_fleet
from hubsim.service.supervisor import default_db

ROOT = Path(__file__).resolve().parent.parent
CERTSTORM = str(Path(sys.executable).with_name("certstorm"))
MINE = ("hub", "fleet", "demo", "report")  # run and plan define their arguments in certstorm/capacity


def certstorm(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CERTSTORM, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


# --- help ---------------------------------------------------------------------------------------------------
def test_the_top_level_help_lists_every_command_with_whole_sentences(tmp_path):
    proc = certstorm("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "mass IoT device authentication with X.509 CA\ncertificates." in out
    for name, (*_, _text) in COMMANDS.items():
        assert f"    {name} " in out
    assert "so that, say" not in out


@pytest.mark.parametrize("name", MINE)
def test_every_argument_of_a_command_has_help_and_its_choices_are_listed(name):
    parser = build_parser([name])
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    for action in sub._actions:
        assert action.help, f"certstorm {name} {action.option_strings or action.dest} has no help"
        if action.choices:
            text = sub.format_help()
            assert all(str(c) in text for c in action.choices), action.dest


# --- argument errors: one line, the argument, what is allowed ----------------------------------------------
BAD = [
    (["hub", "--port", "99999"], "argument --port: must be an integer from 0 to 65535, got '99999'"),
    (["hub", "--port", "http"], "argument --port: must be an integer from 0 to 65535"),
    (["hub", "--workers", "-1"], "argument --workers: must be an integer of at least 0"),
    (["hub", "--challenge-ttl", "0"], "argument --challenge-ttl: must be a number above 0 and at most 3600"),
    (["hub", "--challenge-ttl", "nan"], "argument --challenge-ttl: must be a number above 0"),
    (["hub", "--quota", "S9"], "argument --quota: quota must be S1, S2 or S3"),
    (["hub", "--quota", "S1:500"], "argument --quota: S1 takes 1 to 200 units, not 500"),
    (["hub", "--replay-slots", "4"], "argument --replay-slots: must be an integer from 16 to"),
    (["hub", "--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO'"),
    (["fleet", "--devices", "0", "--out", "f"], "argument --devices: must be an integer of at least 1, got '0'"),
    (["fleet", "--devices", "5", "--out", "f", "--depth", "9"], "argument --depth: must be an integer from 0 to 5"),
    (["fleet", "--devices", "5", "--out", "f", "--alg", "dsa"], "argument --alg: invalid choice: 'dsa'"),
    (
        ["fleet", "--devices", "5", "--out", "f", "--workers", "0"],
        "argument --workers: must be an integer of at least 1",
    ),
    (
        ["fleet", "--devices", "5", "--out", "f", "--alg", "rsa2048", "--seed", "s"],
        "argument --seed: rsa2048 keys cannot be derived from a seed",
    ),
    (["fleet", "--devices", "5"], "the following arguments are required: --out"),
    (["demo", "--devices", "-3"], "argument --devices: must be an integer of at least 1, got '-3'"),
    (["demo", "--depth", "x"], "argument --depth: must be an integer from 0 to 5, got 'x'"),
    (["report", "nowhere"], "argument run: nowhere has no raw/ folder"),
    (["launch"], "argument COMMAND: invalid choice: 'launch' (choose from 'run', 'report', 'plan', 'hub'"),
    ([], "a command is required, one of: run, report, plan, hub, dps, fleet, swarm, pki, demo"),
    (["swarm", "-f", "mine.py"], "argument -f/--locustfile: the swarm is the locustfile"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_a_wrong_argument_gets_one_line_naming_it_and_what_is_allowed(argv, message, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # a hub that started despite a wrong argument would keep its state here, and stop within the timeout
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = certstorm(*argv, cwd=cwd, env=env, timeout=20)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith("certstorm")
    assert list(tmp_path.iterdir()) == [cwd] and not list(cwd.iterdir()), "an argument error left files behind"


def test_a_wrong_port_is_the_only_thing_the_error_names(tmp_path):
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    line = certstorm("hub", "--port", "99999", cwd=tmp_path, env=env, timeout=20).stderr
    assert "--port" in line and "--workers" not in line and "--challenge-ttl" not in line


# --- fleet: an existing one is not replaced without --force ----------------------------------------------
def test_fleet_refuses_a_directory_holding_a_fleet_or_other_files_unless_forced(tmp_path):
    out = tmp_path / "fleet"
    generate_fleet(out, 12, depth=0, seed="keep", workers=1, progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = certstorm("fleet", "--devices", "3", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "argument --out" in proc.stderr and "holds a fleet" in proc.stderr
    assert "--force" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing stored was touched

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    proc = certstorm("fleet", "--devices", "3", "--out", str(other), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "holds files" in proc.stderr
    assert [p.name for p in other.iterdir()] == ["todo.txt"]

    (tmp_path / "plain").write_text("x")
    proc = certstorm("fleet", "--devices", "3", "--out", "plain", cwd=tmp_path)
    assert proc.returncode == 2 and "plain exists and is not a directory" in proc.stderr

    proc = certstorm(
        "fleet", "--devices", "3", "--out", str(out), "--no-progress", "--force", "--workers", "1", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert len(Fleet.open(out)) == 3


def test_fleet_writes_into_a_new_or_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in ("empty", "new/nested"):
        proc = certstorm("fleet", "--devices", "2", "--out", target, "--no-progress", "--workers", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert len(Fleet.open(tmp_path / target)) == 2


# --- hub: nothing in the current directory ------------------------------------------------------------------
def test_the_default_database_is_in_the_per_user_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_db() == tmp_path / "state" / "certstorm" / "hub.db"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db() == tmp_path / "home" / ".local" / "state" / "certstorm" / "hub.db"


def test_the_hub_without_db_leaves_the_current_directory_alone(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen(
        [CERTSTORM, "hub", "--port", "0", "--workers", "1"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "serving" in line, line
        assert f"db {tmp_path / 'state' / 'certstorm' / 'hub.db'}" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not list(cwd.iterdir())
    assert {"hub.db", "hub.db.guard"} <= {p.name for p in (tmp_path / "state" / "certstorm").iterdir()}


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_gitignore_covers_the_hub_side_files():
    names = [
        "certstorm-hub.db",
        "x/hub.db",
        "hub.db-wal",
        "hub.db-shm",
        "hub.db.lock",
        "hub.db.guard",
        "hub.db.stdout",
        "hub.db.stderr",
    ]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True)
    assert sorted(proc.stdout.split()) == sorted(names), proc.stdout + proc.stderr


# --- the swarm from an installed package, in any directory ------------------------------------------------
SWARM_OPTIONS = (
    "--hub-url",
    "--fleet",
    "--devices",
    "--alg",
    "--depth",
    "--shape",
    "--rate",
    "--step-rate",
    "--storm-devices",
    "--backoff",
    "--churn-stay",
    "--results-dir",
)


def test_swarm_help_lists_locusts_options_and_the_swarms_from_any_directory(tmp_path):
    proc = certstorm("swarm", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "--locustfile" in out and "--headless" in out  # Locust's own
    assert "certstorm device swarm:" in out
    missing = [o for o in SWARM_OPTIONS if f"  {o} " not in out and f"  {o}\n" not in out]
    assert not missing, f"not in certstorm swarm --help: {missing}"


def test_swarm_runs_headless_from_a_foreign_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with HubProcess(tmp_path / "hub.db", workers=1) as hub:
        proc = certstorm(
            "swarm",
            "--headless",
            "--only-summary",
            "--host",
            hub.url,
            "--devices",
            "30",
            "--admin-token-file",
            hub.admin_token_path,
            "--fleet-cache",
            str(tmp_path / "cache"),
            "--results-dir",
            "out",
            "--passes",
            "1",
            "-u",
            "3",
            "-r",
            "10",
            "-t",
            "30",
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads(next((tmp_path / "out").glob("*/summary.json")).read_text())
    assert summary["authentications"]["admitted"] == 30
