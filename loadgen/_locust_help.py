"""Makes ``locust -f loadgen --help`` (and plain ``locust --help``) list the swarm's options.

Locust answers ``--help`` before it imports any locustfile (locustio/locust#2917), so options that a
locustfile adds through ``init_command_line_parser`` never show there. Its only earlier hook is an import
of a package named ``locust_plugins``, which belongs to another project. So the distribution installs
``certstorm-locust.pth`` next to the packages; Python runs that line at start-up, and it imports this
module only when a process that mentions locust was asked for help. Here, if the process is the
``locust`` command and its locustfile is ``loadgen`` (or none is named), the swarm's options are
registered on Locust's parser hook before Locust builds its help. Nothing else changes: a real run still gets its options
from the locustfile, ``loadgen/swarm.py``.
"""

from __future__ import annotations

import os
import sys

# CPython options that take a value in the next argument (they are not the script's name)
_PYTHON_OPTIONS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}
_LOCUST_NAMES = {"locust", "locust.exe", "locust-script.py", "locust.py"}


def _locust_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``locust`` in ``locust ...`` or ``python [options] -m locust ...``; None when
    ``argv`` runs some other program."""
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "-m":
            return rest[i + 2:] if rest[i + 1:i + 2] == ["locust"] else None
        if arg.startswith("-m") and not arg.startswith("--"):  # -mlocust
            return rest[i + 1:] if arg[2:] == "locust" else None
        if arg == "-c" or (arg.startswith("-c") and not arg.startswith("--")):
            return None
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        name = os.path.basename(arg.replace("\\", "/")).lower()
        return rest[i + 1:] if name in _LOCUST_NAMES else None
    return None


def _locustfiles(args: list[str]) -> list[str]:
    """The values of ``-f``/``--locustfile`` (comma-separated, as Locust reads them) or LOCUST_LOCUSTFILE."""
    value = os.environ.get("LOCUST_LOCUSTFILE", "")
    for i, arg in enumerate(args):
        if arg in ("-f", "--locustfile") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--locustfile="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-f") and len(arg) > 2:
            value = arg[2:].lstrip("=")
    return [v.strip() for v in value.split(",") if v.strip()]


def is_locust_help(argv: list[str]) -> bool:
    """True when ``argv`` (as in ``sys.orig_argv``) asks the ``locust`` command for help, either with the
    swarm as its locustfile (``-f loadgen``, any path to this folder, or ``-f .../loadgen/swarm.py``) or
    with no locustfile named at all; not for help about some other locustfile, which would refuse them."""
    args = _locust_args(argv)
    if args is None or ("-h" not in args and "--help" not in args):
        return False
    paths = _locustfiles(args)
    if not paths:
        return True
    for path in paths:
        path = path.replace("\\", "/").rstrip("/")
        if os.path.basename(path) == "loadgen" or path.endswith("loadgen/swarm.py"):
            return True
    return False


def install() -> None:
    from locust import events

    from loadgen._options import add_arguments

    events.init_command_line_parser.add_listener(add_arguments)


if is_locust_help(getattr(sys, "orig_argv", sys.argv)):
    install()
