"""The hub simulator as a real HTTP service: ``certstorm hub`` (or ``python -m hubsim.service``).

Supervisor and workers (:mod:`.supervisor`, :mod:`.worker`), the HTTP handlers (:mod:`.app`), the SQLite
store and device registry (:mod:`.store`), the shared challenge secret and replay guard (:mod:`.guard`),
throttling (:mod:`.quota`) and Prometheus metrics (:mod:`.metrics`). docs/api.md documents the API.

Nothing heavy is imported here: prometheus-client must not be imported before the supervisor has set
up its multiprocess directory.
"""

from __future__ import annotations

import argparse
import logging


def add_hub_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port; 0 picks a free one (default 8080)")
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes sharing the port (default: one per CPU)")
    parser.add_argument("--db", default="certstorm-hub.db",
                        help="SQLite database, created if missing (default ./certstorm-hub.db); the challenge "
                             "secret and replay guard live next to it in DB.guard")
    parser.add_argument("--quota", default=None, metavar="PRESET|RATE",
                        help="throttle new device connections: S1, S2 or S3 with optional ':units' (IoT Hub "
                             "tiers, e.g. S2:4 = 480/s), or a rate per second; default unlimited")
    parser.add_argument("--challenge-ttl", type=float, default=30.0, metavar="SECONDS",
                        help="how long a device has to answer its challenge (default 30)")
    parser.add_argument("--replay-slots", type=int, default=None, metavar="N",
                        help="capacity of the shared replay guard (default 1048576; keep proofs/s x challenge "
                             "lifetime under about half of it)")
    parser.add_argument("--mqtts-port", type=int, default=None, metavar="PORT",
                        help="also serve devices over MQTT 3.1.1 with mutual TLS on PORT (8883 is usual; 0 picks "
                             "a free one); the hub CA and server certificate are made on first start in DB.tls/")
    parser.add_argument("--mqtts-validation", choices=("cached", "full"), default="cached",
                        help="cached: the handshake proves possession and the engine's cached path validates "
                             "the chain; full: OpenSSL validates the whole chain in every handshake (default cached)")
    parser.add_argument("--mqtts-connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds a TLS client has from accept to its MQTT CONNECT (default 10)")
    parser.add_argument("--log-level", default="INFO", help="supervisor and worker log level (default INFO)")
    return parser


def hub_command(args: argparse.Namespace) -> int:
    from hubsim.engine import EnginePolicy
    from hubsim.service.guard import DEFAULT_SLOTS
    from hubsim.service.quota import parse_quota
    from hubsim.service.supervisor import HubConfig, serve

    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s certstorm-hub[%(process)d] %(levelname)s %(message)s")
    log = logging.getLogger("certstorm.hub")
    try:
        quota = parse_quota(args.quota)
    except ValueError as exc:
        log.error("--quota: %s", exc)
        return 2
    if args.workers < 0 or not 0 <= args.port <= 65535 or not 0 < args.challenge_ttl <= 3600:
        log.error("--workers must be >= 0, --port 0..65535 and --challenge-ttl 0..3600 seconds")
        return 2
    if args.mqtts_port is not None and not 0 <= args.mqtts_port <= 65535:
        log.error("--mqtts-port must be 0..65535")
        return 2
    if not 0 < args.mqtts_connect_timeout <= 600:
        log.error("--mqtts-connect-timeout must be above 0 and at most 600 seconds")
        return 2
    mqtts = None
    if args.mqtts_port is not None:
        from hubsim.service.mqtts import MqttsSettings
        mqtts = MqttsSettings(port=args.mqtts_port, mode=args.mqtts_validation,
                              connect_timeout=args.mqtts_connect_timeout)
    config = HubConfig(host=args.host, port=args.port, workers=args.workers, db=args.db, quota=quota,
                       replay_slots=args.replay_slots or DEFAULT_SLOTS,
                       policy=EnginePolicy(challenge_ttl=args.challenge_ttl), mqtts=mqtts)
    try:
        return serve(config)
    except (OSError, RuntimeError) as exc:
        log.error("cannot start the hub: %s", exc)
        return 1


__all__ = ["add_hub_arguments", "hub_command"]
