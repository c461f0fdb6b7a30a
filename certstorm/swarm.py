"""``certstorm swarm [locust options]``: Locust with the installed swarm as its locustfile, from any
directory.

Locust answers ``--help`` before it imports any locustfile (locustio/locust#2917), so the options the
swarm adds through ``init_command_line_parser`` never show in ``locust -f loadgen --help``. Running Locust
in this process lets the swarm register them on that hook first, so ``certstorm swarm --help`` lists them;
a run gets them from the locustfile, ``loadgen/swarm.py``, as it would under ``locust -f loadgen``.
"""

from __future__ import annotations

import sys


def _names_a_locustfile(args: list[str]) -> bool:
    return any(a.startswith(("-f", "--locustfile")) for a in args)


def swarm_command(args: list[str]) -> int:
    """Run Locust's own ``main`` on ``args`` with ``-f`` set to the swarm's folder. Locust ends the process itself
    (``sys.exit`` with its status), as under the ``locust`` command."""
    if _names_a_locustfile(args):
        print(
            "certstorm swarm: error: argument -f/--locustfile: the swarm is the locustfile; for another "
            "one run locust -f FILE",
            file=sys.stderr,
        )
        return 2
    from locust import events  # importing locust patches the process for gevent: nothing else runs here
    from locust.main import main

    from loadgen import SWARM_DIR, add_arguments

    events.init_command_line_parser.add_listener(add_arguments)
    sys.argv = ["certstorm swarm", "-f", str(SWARM_DIR), *args]
    main()
    return 0


__all__ = ["swarm_command"]
