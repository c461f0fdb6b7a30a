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


def _run(sub):
    from bench.run import add_run_arguments, run_command
    p = sub.add_parser("run", help="the main job: hub + swarm through step and storm shapes, then the report")
    add_run_arguments(p)
    p.set_defaults(func=run_command)


def _report(sub):
    from bench.report import report_command
    p = sub.add_parser("report", help="rebuild a run's report from its raw data")
    p.add_argument("run", help="a run folder, e.g. results/latest")
    p.set_defaults(func=report_command)


def _plan(sub):
    from bench.plan import add_plan_arguments, plan_command
    p = sub.add_parser("plan", help="answer a sizing question from stored measurements")
    add_plan_arguments(p)
    p.set_defaults(func=plan_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="certstorm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _fleet(sub)
    _hub(sub)
    _demo(sub, "demo", "authenticate a fleet in-process against the engine and compare with the crypto floor")
    _run(sub)
    _report(sub)
    _plan(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
