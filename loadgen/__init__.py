"""The device swarm: ``locust -f loadgen`` (or ``certstorm swarm``) drives many devices of a fleet
against a hub or broker.

Locust imports every ``*.py`` under this folder whose name does not start with ``_`` as a locustfile, so
the locustfile is ``swarm.py`` alone and its helpers are underscore-prefixed modules, private to the
swarm. What the product and the tests use of them is this face. Importing it never imports Locust (which
patches the process for gevent).
"""

from pathlib import Path

from loadgen._histo import (
    EXACT,
    MAX_US,
    N_BUCKETS,
    Histogram,
    bucket_bounds,
    bucket_index,
    from_sparse,
    merge_all,
    sparse_counts,
)
from loadgen._http import Authenticator
from loadgen._options import RUN_OPTIONS, add_arguments
from loadgen._pacer import Pacer
from loadgen._partition import Partition
from loadgen._queue import DeviceQueue
from loadgen._recorder import Recorder
from loadgen._report import merge_reports, spread
from loadgen._schedule import Schedule
from loadgen._shapes import SHAPES, SPAWN_AHEAD, Follow, Plan, Shape, build_shape, slots_for

SWARM_DIR = Path(__file__).resolve().parent  # what Locust's -f takes

__all__ = [
    "EXACT",
    "MAX_US",
    "N_BUCKETS",
    "RUN_OPTIONS",
    "SHAPES",
    "SPAWN_AHEAD",
    "SWARM_DIR",
    "Authenticator",
    "DeviceQueue",
    "Follow",
    "Histogram",
    "Pacer",
    "Partition",
    "Plan",
    "Recorder",
    "Schedule",
    "Shape",
    "add_arguments",
    "bucket_bounds",
    "bucket_index",
    "build_shape",
    "from_sparse",
    "merge_all",
    "merge_reports",
    "slots_for",
    "sparse_counts",
    "spread",
]
