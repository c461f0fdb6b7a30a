"""DPS's command line, ``certstorm dps`` and ``python -m hubsim.dps``: every argument checked by its type.
Nothing heavy is imported at module level (prometheus-client must wait for the supervisor)."""

from __future__ import annotations

import argparse
import re

from hubsim.argtypes import checked, integer, number
from hubsim.service.cli import (
    add_listen_arguments,
    add_log_level,
    add_management_arguments,
    add_mqtts_arguments,
    mqtts_settings,
    run_server,
    start_logging,
)
from hubsim.service.quota import Quota

REGISTRATIONS_PER_MINUTE = 1000  # Azure DPS: device registrations per minute per unit (docs/dps.md)
REGISTRATIONS_PER_UNIT = REGISTRATIONS_PER_MINUTE / 60  # ... per second
MAX_UNITS = 200
_UNITS = re.compile(r"^S1(?::(\d+))?$", re.IGNORECASE)
_SCOPE = re.compile(r"[A-Za-z0-9]{1,32}")


def parse_dps_quota(text: str):
    """``S1[:units]`` (1,000 registrations per minute per unit) or a number of registrations per second;
    None for unlimited. ValueError with a readable message otherwise."""
    spec = text.strip()
    if spec.lower() in ("", "none", "off", "0"):
        return None
    match = _UNITS.match(spec)
    if match:
        units = int(match.group(1) or 1)
        if not 1 <= units <= MAX_UNITS:
            raise ValueError(f"S1 takes 1 to {MAX_UNITS} units, not {units}")
        rate, label = REGISTRATIONS_PER_UNIT * units, f"S1:{units}"
    else:
        try:
            rate = float(spec)
        except ValueError:
            allowed = "S1 with an optional ':units', or registrations per second"
            raise ValueError(f"quota must be {allowed}; got {text!r}") from None
        if not rate >= 0 or rate == float("inf"):
            raise ValueError(f"quota rate must be a non-negative number, got {text!r}")
        if rate == 0:
            return None
        label = f"{rate:g}/s"
    return Quota(rate, max(1.0, rate), label)


dps_quota = checked(parse_dps_quota)  # --quota's argument type


def _scope(text: str) -> str:
    if not _SCOPE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be 1 to 32 letters and digits (e.g. 0ne00ABC123), got {text!r}")
    return text


def add_dps_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_listen_arguments(parser, port=8090, db="dps.db")
    add_mqtts_arguments(parser, who="DPS's")
    parser.add_argument(
        "--id-scope", type=_scope, default=None, metavar="SCOPE", help="the id scope devices name (default: made once)"
    )
    parser.add_argument(
        "--retry-after",
        type=integer(0, 60),
        default=1,
        metavar="SECONDS",
        help="the retry-after DPS answers while assigning, 0..60 (default 1)",
    )
    parser.add_argument(
        "--hub-timeout",
        type=number(0, 60, low_open=True),
        default=5.0,
        metavar="SECONDS",
        help="how long writing a device into its hub may take before the hub counts as down (default 5)",
    )
    parser.add_argument(
        "--quota",
        type=dps_quota,
        default=None,
        metavar="S1[:UNITS]|RATE",
        help="throttle registrations: S1 units of 1,000/min (Azure DPS), or registrations per second; "
        "default unlimited",
    )
    parser.add_argument(
        "--challenge-ttl",
        type=number(0, 3600, low_open=True),
        default=30.0,
        metavar="SECONDS",
        help="how long a device of the HTTP form has to answer its challenge (default 30)",
    )
    add_management_arguments(parser)
    add_log_level(parser)
    return parser


def dps_command(args: argparse.Namespace) -> int:
    from hubsim.dps.supervisor import DpsConfig, default_dps_db, serve
    from hubsim.engine import EnginePolicy

    start_logging("certstorm-dps", args.log_level)
    config = DpsConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        db=str(args.db or default_dps_db()),
        quota=args.quota,
        policy=EnginePolicy(challenge_ttl=args.challenge_ttl),
        management=args.management,
        admin_token_file=args.admin_token_file,
        mqtts=mqtts_settings(args),
        id_scope=args.id_scope,
        retry_after=args.retry_after,
        hub_timeout=args.hub_timeout,
    )
    return run_server(serve, config, "DPS")


__all__ = [
    "MAX_UNITS",
    "REGISTRATIONS_PER_MINUTE",
    "REGISTRATIONS_PER_UNIT",
    "add_dps_arguments",
    "dps_command",
    "dps_quota",
    "parse_dps_quota",
]
