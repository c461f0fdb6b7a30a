"""The ``certstorm`` command line. Subcommands import their part lazily so that, say, ``certstorm hub``
never loads Locust."""

from __future__ import annotations

import argparse
import importlib
import sys


# name: (module, function that adds the arguments or None, command function, help)
_COMMANDS = {
    "fleet": ("loadgen._fleet", "add_fleet_arguments", "fleet_command", "make a fleet of device identities on disk"),
    "hub": ("hubsim.service", "add_hub_arguments", "hub_command",
            "run the hub simulator service (aiohttp + uvloop, several processes)"),
    "demo": ("bench.demo", "add_demo_arguments", "demo_command",
             "authenticate a fleet in-process against the engine and compare with the crypto floor"),
    "run": ("bench.capacity.run", "add_run_arguments", "run_command",
            "the main job: hub + swarm through step and storm shapes, then the report"),
    "report": ("bench.capacity.report", None, "report_command", "rebuild a run's report from its raw data"),
    "plan": ("bench.capacity.plan", "add_plan_arguments", "plan_command", "answer a sizing question from stored measurements"),
}


def _command(name: str):
    """The subcommand's function, imported only when that subcommand runs."""
    module, _, func, _ = _COMMANDS[name]
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="certstorm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if a in _COMMANDS), None)
    for name, (module, add, _, text) in _COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if name == "report":
            p.add_argument("run", help="a run folder, e.g. results/latest")
        elif name == chosen:  # only the chosen subcommand's module is imported
            getattr(importlib.import_module(module), add)(p)
    args = parser.parse_args(argv)
    return _command(args.command)(args)


if __name__ == "__main__":
    sys.exit(main())
