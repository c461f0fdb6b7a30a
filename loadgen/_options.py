"""The swarm's command-line options, kept apart from the locustfile so that they can be added to Locust's
parser without importing the swarm (see ``loadgen/_locust_help.py``)."""

from __future__ import annotations

from loadgen import _shapes
from loadgen._backoff import PRESETS
from loadgen._identities import DEFAULT_SEED
from loadgen._pki import ALGORITHMS


def add_arguments(parser) -> None:
    """Add the swarm's options to Locust's parser, in a group of their own (once per parser: both the
    locustfile and the ``--help`` hook may ask)."""
    if getattr(parser, "certstorm_swarm_options", False):
        return
    parser.certstorm_swarm_options = True
    g = parser.add_argument_group("certstorm device swarm (locust -f loadgen)")
    g.add_argument("--hub-url", default=None, metavar="URL",
                   help="hub base URL (default: Locust's --host)")
    g.add_argument("--fleet", default=None, metavar="DIR",
                   help="device identities from a fleet made by 'certstorm fleet' (default: derive --devices)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="without --fleet: derive N identities at start-up (default 1000); with --fleet: use "
                        "only the first N (default: all)")
    g.add_argument("--alg", choices=ALGORITHMS, default="p256", help="device key algorithm of derived fleets")
    g.add_argument("--depth", type=int, default=2, metavar="K", help="intermediates below Company-X (derived)")
    g.add_argument("--seed", default=DEFAULT_SEED, metavar="TEXT",
                   help="seed of derived fleets, so every process and host derives the same devices and CA "
                        "('random' for a fresh fleet; default %(default)s)")
    g.add_argument("--fleet-cache", default=None, metavar="DIR",
                   help="where derived fleets are kept (default: <tmp>/certstorm-fleets)")
    g.add_argument("--shape", choices=_shapes.SHAPES, default="closed",
                   help="load shape (default closed: -u slots back to back for -t)")
    g.add_argument("--rate", type=float, default=200.0, metavar="AUTH/S",
                   help="steady: target authentications/s; step: the first step's rate (default 200)")
    g.add_argument("--step-rate", type=float, default=200.0, metavar="AUTH/S", help="step: added per step")
    g.add_argument("--step-seconds", type=float, default=10.0, metavar="S", help="step: length of a step")
    g.add_argument("--steps", type=int, default=5, metavar="N", help="step: number of steps")
    g.add_argument("--slots", type=int, default=0, metavar="N",
                   help="connection slots (Locust users) for steady/step/storm/churn (default: steady/step from "
                        "Little's law with --latency-budget, storm 100, churn 50)")
    g.add_argument("--latency-budget", type=float, default=0.05, metavar="S",
                   help="steady/step: latency the slots must absorb without delaying arrivals (default 0.05)")
    g.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson",
                   help="steady/step: inter-arrival times per slot (default poisson)")
    g.add_argument("--storm-devices", type=int, default=0, metavar="N",
                   help="storm: devices that reconnect at once (default: every device)")
    g.add_argument("--storm-spread", type=float, default=0.0, metavar="S",
                   help="storm: spread the first attempts uniformly over S seconds (default 0: all at once)")
    g.add_argument("--backoff", choices=sorted(PRESETS), default="azure-c",
                   help="storm/churn: retry backoff preset (default azure-c)")
    g.add_argument("--churn-devices", type=int, default=0, metavar="N", help="churn: devices (default: all)")
    g.add_argument("--churn-stay", type=float, default=5.0, metavar="S", help="churn: mean seconds online")
    g.add_argument("--churn-away", type=float, default=5.0, metavar="S", help="churn: mean seconds offline")
    g.add_argument("--passes", type=int, default=0, metavar="P",
                   help="closed/steady/step: stop after P passes over the devices (default 0: no limit)")
    g.add_argument("--request-timeout", type=float, default=30.0, metavar="S", help="per-request socket timeout")
    g.add_argument("--results-dir", default="swarm-results", metavar="DIR",
                   help="where each run writes summary.json, histograms.npz and worker reports")
    g.add_argument("--finish-timeout", type=float, default=20.0, metavar="S",
                   help="how long the master waits for workers' final reports (default 20)")
