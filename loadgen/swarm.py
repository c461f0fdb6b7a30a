"""The device swarm: ``locust -f loadgen`` (this is the only locustfile under loadgen/), for example
``locust -f loadgen --headless --host http://127.0.0.1:8080 --devices 20000 -u 50 -t 30``.

A Locust user here is a *connection slot*: one keep-alive connection to the hub that authenticates many
devices in turn. Identities come from a fleet (``--fleet DIR``) or are derived at start-up (``--devices
N``); worker ``w`` of ``W`` uses devices ``w, w+W, ...``, so no device is used twice in one pass. The
master (or the single process) registers Company-X's CA once per run, before any slot starts. ``--shape``
chooses the load (:mod:`loadgen._shapes`, docs/swarm.md); this module exposes exactly one
``LoadTestShape``, a dispatcher, because Locust silently takes the first shape class it finds. It only
wires the pieces into Locust: the listeners (:mod:`loadgen._events`), the connection slot
(:mod:`loadgen._users`) and the load shape (:mod:`loadgen._dispatch`); :mod:`loadgen._report` writes the
results.
"""

from loadgen import _events  # noqa: F401 - registers the swarm's listeners and options with Locust
from loadgen._dispatch import SwarmShape
from loadgen._users import DeviceSlot

__all__ = ["DeviceSlot", "SwarmShape"]
