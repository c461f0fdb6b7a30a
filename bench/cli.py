"""The ``certstorm`` command line. Subcommands import their part lazily so that, say, ``certstorm hub``
never loads Locust."""

from __future__ import annotations

import argparse
import sys


def _fleet(sub):
    from loadgen._fleet import add_fleet_arguments, fleet_command
    p = sub.add_parser("fleet", help="make a fleet of device identities on disk")
    add_fleet_arguments(p)
    p.set_defaults(func=fleet_command)


def _hub(sub):
    from hubsim.service import add_hub_arguments, hub_command
    p = sub.add_parser("hub", help="run the hub simulator service (aiohttp + uvloop, several processes)")
    add_hub_arguments(p)
    p.set_defaults(func=hub_command)


def _demo(sub, name, text):
    from bench.demo import add_demo_arguments, demo_command
    p = sub.add_parser(name, help=text)
    add_demo_arguments(p)
    p.set_defaults(func=demo_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="certstorm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _fleet(sub)
    _hub(sub)
    _demo(sub, "demo", "authenticate a fleet in-process against the engine and compare with the crypto floor")
    _demo(sub, "run", "the main job (today: the in-process demo)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
