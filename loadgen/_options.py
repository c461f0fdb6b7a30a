"""The swarm's command-line options, kept apart from the locustfile so that they can be added to Locust's
parser without importing the swarm (see ``loadgen/_launch.py``)."""

from __future__ import annotations

from devicekit.backoff import PRESETS
from devicekit.fleet import DEFAULT_SEED, SAN_KINDS
from devicekit.pki import ALGORITHMS, MAX_DEPTH
from devicekit.profiles import DEVICE_CLASSES, NETWORKS, device_profile, network_profile
from hubsim.argtypes import integer, number
from loadgen import _shapes
from loadgen._mqtt import add_arguments as _mqtt_arguments
from loadgen._provision import add_arguments as _provision_arguments

# What the web UI may change between runs: everything read when a run starts. The fleet (--fleet,
# --devices, --alg, --depth, --san, --seed) is opened at start-up, so the UI does not offer it.
RUN_OPTIONS = (
    "hub_url",
    "shape",
    "rate",
    "step_rate",
    "step_seconds",
    "steps",
    "slots",
    "latency_budget",
    "arrivals",
    "storm_devices",
    "storm_spread",
    "backoff",
    "churn_devices",
    "churn_stay",
    "churn_away",
    "passes",
    "request_timeout",
    "results_dir",
)


def _offered_in_web_ui(group):
    """``group.add_argument`` that also marks the run options for Locust's web UI, which lists only the
    arguments added to its parser directly (locustio/locust#2560)."""

    def add(*args, **kwargs):
        action = group.add_argument(*args, **kwargs)
        action.include_in_web_ui = action.dest in RUN_OPTIONS
        return action

    return add


def add_arguments(parser) -> None:
    """Add the swarm's options to Locust's parser, in a group of their own (once per parser: both the
    locustfile and ``certstorm swarm`` may ask)."""
    if getattr(parser, "certstorm_swarm_options", False):
        return
    parser.certstorm_swarm_options = True
    add = _offered_in_web_ui(parser.add_argument_group("certstorm device swarm"))
    add("--hub-url", default=None, metavar="URL", help="hub base URL (default: Locust's --host)")
    add(
        "--admin-token-file",
        default=None,
        metavar="PATH",
        help="the hub's management token, needed to register Company-X's CA (the hub prints where it is; "
        "default: the CERTSTORM_ADMIN_TOKEN environment variable)",
    )
    add(
        "--fleet",
        default=None,
        metavar="DIR",
        help="device identities from a fleet made by 'certstorm fleet' (default: derive --devices)",
    )
    add(
        "--devices",
        type=integer(1),
        default=None,
        metavar="N",
        help="without --fleet: derive N identities at start-up (default 1000); with --fleet: use "
        "only the first N (default: all)",
    )
    add("--alg", choices=ALGORITHMS, default="p256", help="device key algorithm of derived fleets")
    add("--depth", type=integer(0, MAX_DEPTH), default=2, metavar="K", help="intermediates below Company-X (derived)")
    add(
        "--san",
        choices=SAN_KINDS,
        default=None,
        metavar="KIND",
        help="derived fleets: a per-device SubjectAlternativeName with the device's DNS name, URI or both "
        "(%(choices)s; default none)",
    )
    add(
        "--seed",
        default=DEFAULT_SEED,
        metavar="TEXT",
        help="seed of derived fleets, so every process and host derives the same devices and CA "
        "('random' for a fresh fleet; default %(default)s)",
    )
    add(
        "--fleet-cache",
        default=None,
        metavar="DIR",
        help="where derived fleets are kept (default: <tmp>/certstorm-fleets)",
    )
    add(
        "--shape",
        choices=_shapes.SHAPES,
        default="closed",
        help="load shape (default closed: -u slots back to back for -t; follow: the rates of --schedule-file)",
    )
    add(
        "--rate",
        type=number(0, low_open=True),
        default=200.0,
        metavar="AUTH/S",
        help="steady: target authentications/s; step: the first step's rate (default 200)",
    )
    add("--step-rate", type=number(0), default=200.0, metavar="AUTH/S", help="step: added per step")
    add("--step-seconds", type=number(0, low_open=True), default=10.0, metavar="S", help="step: length of a step")
    add("--steps", type=integer(1), default=5, metavar="N", help="step: number of steps")
    add(
        "--slots",
        type=integer(0),
        default=0,
        metavar="N",
        help="connection slots (Locust users) for steady/step/storm/churn (default: steady/step from "
        "Little's law with --latency-budget, storm 100, churn 50)",
    )
    add(
        "--latency-budget",
        type=number(0, low_open=True),
        default=0.05,
        metavar="S",
        help="steady/step: latency the slots must absorb without delaying arrivals (default 0.05)",
    )
    add(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="steady/step: inter-arrival times per slot (default poisson)",
    )
    add(
        "--storm-devices",
        type=integer(0),
        default=0,
        metavar="N",
        help="storm: devices that reconnect at once (default: every device)",
    )
    add(
        "--storm-spread",
        type=number(0),
        default=0.0,
        metavar="S",
        help="storm: spread the first attempts uniformly over S seconds (default 0: all at once)",
    )
    add(
        "--backoff",
        choices=sorted(PRESETS),
        default="azure-c",
        help="storm/churn: retry backoff preset (default azure-c)",
    )
    add("--churn-devices", type=integer(0), default=0, metavar="N", help="churn: devices (default: all)")
    add("--churn-stay", type=number(0), default=5.0, metavar="S", help="churn: mean seconds online")
    add("--churn-away", type=number(0), default=5.0, metavar="S", help="churn: mean seconds offline")
    add(
        "--passes",
        type=integer(0),
        default=0,
        metavar="P",
        help="closed/steady/step: stop after P passes over the devices (default 0: no limit)",
    )
    add(
        "--first-device",
        type=integer(0),
        default=0,
        metavar="N",
        help="closed/steady/step: start at device N of the fleet and wrap around (default 0), so that runs one "
        "after another against one hub can bring devices it has not seen yet",
    )
    add(
        "--request-timeout", type=number(0, low_open=True), default=30.0, metavar="S", help="per-request socket timeout"
    )
    add(
        "--results-dir",
        default="swarm-results",
        metavar="DIR",
        help="where each run writes summary.json, histograms.npz and worker reports",
    )
    add(
        "--schedule-file",
        default=None,
        metavar="PATH",
        help="follow: the schedule of rates a runner writes while the run goes on (certstorm run does)",
    )
    add(
        "--live-file",
        default=None,
        metavar="PATH",
        help="append every process's figures second by second to PATH as JSON lines, with the workers that "
        "join, are ready or go missing (certstorm run reads it)",
    )
    add(
        "--device-profile",
        type=device_profile,
        default="software",
        metavar="MIX",
        help="each device's signing latency, drawn from its class and waited, not computed: a class or a mix "
        f"such as secure-element:70,tpm:30 ({', '.join(DEVICE_CLASSES)}; sources in docs/profiles.md; "
        "default software: no wait)",
    )
    add(
        "--network",
        type=network_profile,
        default="loopback",
        metavar="MIX",
        help=f"round-trip time added to each exchange: {', '.join(NETWORKS)}, or a mix such as wifi:50,lte-m:50 "
        "(default loopback: none)",
    )
    _mqtt_arguments(add)
    _provision_arguments(add)
    add(
        "--finish-timeout",
        type=number(0, low_open=True),
        default=20.0,
        metavar="S",
        help="how long the master waits for workers' final reports (default 20)",
    )


__all__ = ["RUN_OPTIONS", "add_arguments"]
