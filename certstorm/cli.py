"""The ``certstorm`` command line.

Each subcommand's module is imported only when that subcommand runs, so that ``certstorm hub`` never loads
Locust and ``certstorm --help`` loads nothing but this file.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from hubsim.argtypes import OneLineErrors

DESCRIPTION = """Load testing and capacity planning for mass IoT device authentication with X.509 CA
certificates. 'certstorm COMMAND --help' describes each command."""
EPILOG = """examples:
  certstorm run                                    the main job: hub + swarm + report in results/latest/
  certstorm hub --port 8080 --quota S1             the hub alone (docs/api.md)
  certstorm dps --port 8090 --mqtts-port 8883      DPS in front of several hubs (docs/dps.md)
  certstorm fleet --devices 1000000 --out fleets/1m
  certstorm pki chain --company-token company-x --company-pin-file company-x.pin ...   keys in tokens (docs/hsm.md)
  certstorm swarm --headless --host http://127.0.0.1:8080 --fleet fleets/1m --shape step
  certstorm plan --devices 2000000 --window 10m --p99 500ms"""

# name: (module, function that adds the arguments or None, command function, help)
COMMANDS = {
    "run": (
        "certstorm.capacity.run",
        "add_run_arguments",
        "run_command",
        "the main job: hub + swarm through step and storm shapes, then the report",
    ),
    "report": ("certstorm.capacity.report", None, "report_command", "rebuild a run's report from its raw data"),
    "plan": (
        "certstorm.capacity.plan",
        "add_plan_arguments",
        "plan_command",
        "answer a sizing question from stored measurements",
    ),
    "hub": (
        "hubsim.service",
        "add_hub_arguments",
        "hub_command",
        "run the hub simulator service (aiohttp + uvloop, several processes)",
    ),
    "dps": (
        "hubsim.dps",
        "add_dps_arguments",
        "dps_command",
        "run the Device Provisioning Service simulator: enrollment groups, allocation over linked hubs (docs/dps.md)",
    ),
    "fleet": ("certstorm.fleet", "add_fleet_arguments", "fleet_command", "make a fleet of device identities on disk"),
    "swarm": (
        "certstorm.swarm",
        None,
        "swarm_command",
        "run the device swarm: Locust with the installed swarm as its locustfile; every other argument "
        "goes to Locust ('certstorm swarm --help' lists Locust's options and the swarm's)",
    ),
    "pki": (
        "certstorm.pki",
        "add_pki_arguments",
        "pki_command",
        "the supply-chain PKI with every key made inside a PKCS#11 token (docs/hsm.md)",
    ),
    "demo": (
        "certstorm.demo",
        "add_demo_arguments",
        "demo_command",
        "authenticate a fleet in-process against the engine and compare with the crypto floor",
    ),
}


def _command(name: str):
    """The subcommand's function, imported only when that subcommand runs."""
    module, _, func, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), func)


def _run_folder(text: str) -> str:
    if not Path(text, "raw").is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} has no raw/ folder: name a run folder that 'certstorm run' wrote, e.g. results/latest"
        )
    return text


def build_parser(argv: list[str]) -> OneLineErrors:
    """The parser, with the arguments of the subcommand ``argv`` names (only its module is imported)."""
    parser = OneLineErrors(
        prog="certstorm", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, add, _, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".")
        if name == "report":
            p.add_argument("run", type=_run_folder, help="a run folder, e.g. results/latest")
        elif add and name == chosen:
            getattr(importlib.import_module(module), add)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["swarm"]:  # Locust parses the rest itself
        return _command("swarm")(argv[1:])
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"a command is required, one of: {', '.join(COMMANDS)}")
    args.argv = argv[1:]  # the command's own words, as given
    return _command(args.command)(args)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["COMMANDS", "DESCRIPTION", "EPILOG", "build_parser", "main"]
