"""Makes ``locust --help`` list the swarm's options.

Locust answers ``--help`` before it imports any locustfile (locustio/locust#2917), so options that a
locustfile adds through ``init_command_line_parser`` never show there. Its only earlier hook is an import
of a package named ``locust_plugins``, which belongs to another project. So the distribution installs
``certstorm-locust.pth`` next to the packages; Python runs that line at start-up, and it imports this
module only when the process was asked for help. Here, if the process is the ``locust`` command, the
swarm's options are registered on Locust's parser hook before Locust builds its help. Nothing else
changes: a real run still gets its options from the locustfile, ``loadgen/swarm.py``.
"""

from __future__ import annotations

import os
import sys


def is_locust_help(argv: list[str]) -> bool:
    """True for ``locust ... --help`` and ``python -m locust ... --help`` (``argv`` as in ``sys.orig_argv``)."""
    if "-h" not in argv and "--help" not in argv:
        return False
    if argv[1:3] == ["-m", "locust"]:
        return True
    script = next((a for a in argv[1:] if not a.startswith("-")), "")
    return os.path.basename(script) in ("locust", "locust.exe", "locust-script.py")


def install() -> None:
    from locust import events

    from loadgen._options import add_arguments

    events.init_command_line_parser.add_listener(add_arguments)


if is_locust_help(getattr(sys, "orig_argv", sys.argv)):
    install()
