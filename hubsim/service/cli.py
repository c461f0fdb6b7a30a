"""The hub's command line, ``certstorm hub`` and ``python -m hubsim.service``: every argument checked by its
type, so a wrong one is refused before anything starts. Nothing heavy is imported at module level:
prometheus-client must not be imported before the supervisor has set up its multiprocess directory."""

from __future__ import annotations

import argparse
import logging

from hubsim.argtypes import checked, integer, number
from hubsim.service.quota import parse_quota

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_REPLAY_SLOTS = 1 << 27  # a 3 GiB guard file


def add_listen_arguments(parser: argparse.ArgumentParser, *, port: int, db: str) -> None:
    """Where a service listens and keeps its database, shared by the hub and DPS."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=integer(0, 65535),
        default=port,
        metavar="PORT",
        help=f"TCP port 0..65535; 0 picks a free one (default {port})",
    )
    parser.add_argument(
        "--workers",
        type=integer(0),
        default=0,
        metavar="N",
        help="worker processes sharing the port; 0 means one per CPU (the default)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="SQLite database, created if missing, with its side files next to it (PATH-wal, PATH-shm, "
        "PATH.lock and PATH.guard with the challenge secret and replay guard); "
        f"default $XDG_STATE_HOME/certstorm/{db}, else ~/.local/state/certstorm/{db}",
    )


def add_mqtts_arguments(parser: argparse.ArgumentParser, *, who: str) -> None:
    """Devices over MQTT with mutual TLS, shared by the hub and DPS."""
    parser.add_argument(
        "--mqtts-port",
        type=integer(0, 65535),
        default=None,
        metavar="PORT",
        help="also serve devices over MQTT 3.1.1 with mutual TLS on PORT 0..65535 (8883 is what device SDKs "
        f"use; 0 picks a free one); {who} CA and server certificate are made on first start in DB.tls/",
    )
    parser.add_argument(
        "--mqtts-connect-timeout",
        type=number(0, 600, low_open=True),
        default=10.0,
        metavar="SECONDS",
        help="seconds a TLS client has from accept to its MQTT CONNECT, above 0 and at most 600 (default 10)",
    )


def mqtts_settings(args: argparse.Namespace, mode: str = "cached"):
    """The MQTT listener's settings from :func:`add_mqtts_arguments`' flags; None without ``--mqtts-port``."""
    if args.mqtts_port is None:
        return None
    from hubsim.service.mqtts import MqttsSettings

    return MqttsSettings(port=args.mqtts_port, mode=mode, connect_timeout=args.mqtts_connect_timeout)


def add_management_arguments(parser: argparse.ArgumentParser) -> None:
    """How a service's management endpoints are guarded, shared by the hub and DPS."""
    parser.add_argument(
        "--management",
        choices=("token", "open", "off"),
        default="token",
        help="how the management endpoints are guarded: token (default: a bearer token, made in "
        "DB.admin-token on first start), open (no credential; loopback addresses only) or off (refused)",
    )
    parser.add_argument(
        "--admin-token-file",
        default=None,
        metavar="PATH",
        help="read the management token from PATH (mode 600) instead of DB.admin-token",
    )


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="LEVEL",
        help="supervisor and worker log level: %(choices)s (default INFO)",
    )


def start_logging(program: str, level: str) -> None:
    """The services' log lines: time, program and process, level."""
    logging.basicConfig(level=level, format=f"%(asctime)s {program}[%(process)d] %(levelname)s %(message)s")


def run_server(serve, config, what: str) -> int:
    """``serve(config)`` as a command's exit status: 2 for a configuration it refuses, 1 for a start that fails."""
    from hubsim.service.credential import ConfigError

    log = logging.getLogger("certstorm")
    try:
        return serve(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (OSError, RuntimeError) as exc:
        log.error("cannot start %s: %s", what, exc)
        return 1


def add_hub_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_listen_arguments(parser, port=8080, db="hub.db")
    parser.add_argument(
        "--quota",
        type=checked(parse_quota),
        default=None,
        metavar="PRESET|RATE",
        help="throttle new device connections: S1, S2 or S3 with optional ':units' (IoT Hub "
        "tiers, e.g. S2:4 = 480/s), or a rate per second; default unlimited",
    )
    parser.add_argument(
        "--challenge-ttl",
        type=number(0, 3600, low_open=True),
        default=30.0,
        metavar="SECONDS",
        help="how long a device has to answer its challenge, above 0 and at most 3600 (default 30)",
    )
    parser.add_argument(
        "--replay-slots",
        type=integer(16, MAX_REPLAY_SLOTS),
        default=None,
        metavar="N",
        help=f"capacity of the shared replay guard, 16..{MAX_REPLAY_SLOTS} (default 1048576; keep "
        "proofs/s x challenge lifetime under about half of it)",
    )
    add_management_arguments(parser)
    parser.add_argument(
        "--admission",
        choices=("any", "provisioned"),
        default="any",
        help="any (default): every device whose chain leads to a verified CA; provisioned: only devices a "
        "provisioning service (certstorm dps) recorded here with PUT /devices/{id}, with that certificate",
    )
    add_mqtts_arguments(parser, who="the hub's")
    parser.add_argument(
        "--mqtts-validation",
        choices=("cached", "full"),
        default="cached",
        help="cached: the handshake proves possession and the engine's cached path validates "
        "the chain; full: OpenSSL validates the whole chain in every handshake (default cached)",
    )
    add_log_level(parser)
    return parser


def hub_command(args: argparse.Namespace) -> int:
    from hubsim.engine import EnginePolicy
    from hubsim.service.guard import DEFAULT_SLOTS
    from hubsim.service.supervisor import HubConfig, default_db, serve

    start_logging("certstorm-hub", args.log_level)
    config = HubConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        db=str(args.db or default_db()),
        quota=args.quota,
        replay_slots=args.replay_slots or DEFAULT_SLOTS,
        policy=EnginePolicy(challenge_ttl=args.challenge_ttl, provisioned_only=args.admission == "provisioned"),
        management=args.management,
        admin_token_file=args.admin_token_file,
        mqtts=mqtts_settings(args, args.mqtts_validation),
    )
    return run_server(serve, config, "the hub")


__all__ = [
    "LOG_LEVELS",
    "add_hub_arguments",
    "add_listen_arguments",
    "add_log_level",
    "add_management_arguments",
    "add_mqtts_arguments",
    "hub_command",
    "mqtts_settings",
    "run_server",
    "start_logging",
]
