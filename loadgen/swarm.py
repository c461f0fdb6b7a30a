"""The device swarm: ``locust -f loadgen`` (this is the only locustfile under loadgen/).

A Locust user here is a *connection slot*: one keep-alive connection to the hub that works through many
devices in turn -- challenge request with the device's chain, signature with the device's own key, proof
request. Identities come from a fleet (``--fleet DIR``) or are derived at start-up (``--devices N``);
worker ``w`` of ``W`` uses devices ``w, w+W, ...`` so that within one pass no device is used twice
anywhere. The master (or the single process) registers Company-X's CA and proves possession through the
hub's HTTP API once per run, before any slot starts.

The load shape is chosen with ``--shape`` and this module exposes exactly one ``LoadTestShape``, a
dispatcher, because Locust silently takes the first shape class it finds:

* ``closed`` (default) -- Locust's own model: ``-u`` slots authenticate back to back, ``-r``, ``-t``;
* ``steady`` -- ``--rate`` authentications/s, each slot on a Poisson arrival schedule; latency is also
  measured from the intended start (coordinated omission), intended and achieved rates are recorded;
* ``step`` -- ``--rate``, then ``+--step-rate`` every ``--step-seconds``, ``--steps`` times;
* ``storm`` -- ``--storm-devices`` devices all due at once, retrying on 429/5xx/connection errors with
  ``--backoff``; records the admission curve;
* ``churn`` -- ``--churn-devices`` devices connect, stay ~``--churn-stay`` s, leave, come back after
  ~``--churn-away`` s.

Results (``--results-dir``, one sub-directory per run): see ``loadgen/_report.py``. This file only wires
the pieces into Locust: the listeners (:mod:`loadgen._events`), the connection slot (:mod:`loadgen._users`)
and the one load shape (:mod:`loadgen._dispatch`).

Examples::

    locust -f loadgen --headless --host http://127.0.0.1:8080 --devices 20000 -u 50 -t 30
    locust -f loadgen --headless --host http://127.0.0.1:8080 --fleet fleets/1m --shape steady --rate 1000 -t 60
    locust -f loadgen --headless --host http://127.0.0.1:8080 --devices 5000 --shape storm --backoff aws-crt
    locust -f loadgen --processes 2 --headless --host http://127.0.0.1:8080 --fleet fleets/1m --passes 1
"""

from loadgen import _events  # noqa: F401 - registers the swarm's listeners and options with Locust
from loadgen._dispatch import SwarmShape
from loadgen._users import DeviceSlot

__all__ = ["DeviceSlot", "SwarmShape"]
