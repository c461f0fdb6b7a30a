"""What certstorm run is asked: arguments refused before anything is made, thresholds a run can be gated on,
and the hub's counters as the run reads them."""

import argparse
import subprocess

import pytest
from test_run import RUN

from certstorm.capacity.requirements import check_requirements, parse_requirement
from certstorm.cli import main


@pytest.mark.parametrize(
    "text,met",
    [
        ("knee>=2000/s", True),
        ("knee>=2001/s", False),
        ("p99<=50ms", True),
        ("p99<40", False),
        ("errors<=0.1%", True),
        ("storm_admitted>=99%", False),
        ("target_us<=500us", True),
        ("ceiling>=2500/s", False),
    ],
)
def test_requirements_compare_what_was_measured(text, met):
    summary = {
        "knee": {"achieved": 2000.0, "p99": 45.0, "error_rate": 0.0005},
        "storm": {"admitted_fraction": 0.97},
        "cost": {"target_us_per_auth": 450.0},
        "per_segment": [{"ceiling": {"achieved": 2400.0}}],
    }
    assert (check_requirements([parse_requirement(text)], summary) == []) == met


def test_a_requirement_on_something_not_measured_fails():
    [msg] = check_requirements([parse_requirement("knee>=10/s")], {"knee": None, "storm": None})
    assert "not measured" in msg


@pytest.mark.parametrize("text", ["knee", "knee>=fast", "latency<=5ms", "p99<=5s", "knee=>5/s"])
def test_a_malformed_requirement_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_requirement(text)


@pytest.mark.parametrize(
    "args,named",
    [
        (["--workers", "0"], "--workers"),
        (["--step-seconds", "-1"], "--step-seconds"),
        (["--step-seconds", "2"], "--step-seconds"),
        (["--require", "knee"], "--require"),
        (["--backoff", "nope"], "--backoff"),
        (["--storm-devices", "-3"], "--storm-devices"),
        (["--swarm-workers", "0"], "--swarm-workers"),
        (["--target", "ftp://example.test:21"], "--target"),
        (["--target", "mqtts://127.0.0.1:1"], "--target"),
        (["--target-pid", "999999999"], "--target-pid"),
        (["--fleet", "/nonexistent/fleet"], "--fleet"),
    ],
)
def test_bad_run_arguments_exit_2_naming_the_argument_before_anything_is_made(args, named, tmp_path, capsys):
    try:  # in this process: the command line's own path, without its start-up
        code = main(["run", *args, "--out", str(tmp_path)])
    except SystemExit as exited:
        code = exited.code
    stderr = capsys.readouterr().err
    assert code == 2 and f"argument {named}" in stderr.splitlines()[-1], stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert not list(tmp_path.iterdir())  # no run folder, no fleet


def test_a_bad_run_argument_exits_2_from_the_installed_command(tmp_path):
    proc = subprocess.run([*RUN, "--workers", "0", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "argument --workers" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())


def test_hub_metrics_are_read_with_prometheus_parser():
    from certstorm.capacity.sampler import parse_auth_metrics

    text = (
        "# HELP certstorm_authentications_total Device authentications by outcome\n"
        "# TYPE certstorm_authentications_total counter\n"
        'certstorm_authentications_total{outcome="admitted",worker="0"} 1500.0\n'
        'certstorm_authentications_total{outcome="admitted",worker="1"} 2.5e3\n'
        'certstorm_authentications_total{outcome="refused",code="throttled"} 7.0\n'
        'certstorm_authentications_created{outcome="admitted",worker="0"} 1.7e9\n'
        '# TYPE certstorm_other_total counter\ncertstorm_other_total{outcome="admitted"} 99.0\n'
    )
    assert parse_auth_metrics(text) == (4000.0, 7.0)


def test_reconnects_are_read_from_the_hubs_cache_counter():
    from certstorm.capacity.sampler import parse_cache_metrics

    text = (
        "# HELP certstorm_chain_cache_total Device chain validations by cache result\n"
        "# TYPE certstorm_chain_cache_total counter\n"
        'certstorm_chain_cache_total{result="reconnect"} 1200.0\n'
        'certstorm_chain_cache_total{result="hit"} 300.0\n'
        'certstorm_chain_cache_total{result="miss"} 2.0\n'
    )
    assert parse_cache_metrics(text) == 1200.0
