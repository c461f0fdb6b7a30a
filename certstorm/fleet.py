"""``certstorm fleet``: make a fleet of device identities on disk (:mod:`devicekit.fleet`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devicekit.fleet import CA_FILE, CHAIN_FILE, META_FILE, SAN_DNS_SUFFIX, SAN_KINDS, SAN_URI_PREFIX, generate_fleet
from devicekit.pki import ALGORITHMS, MAX_DEPTH
from hubsim.argtypes import integer

__all__ = ["add_chain_arguments", "add_fleet_arguments", "fleet_command"]


def add_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """The shape of a fleet's chain and keys, for every command that makes one."""
    parser.add_argument(
        "--depth",
        type=integer(0, MAX_DEPTH),
        default=2,
        metavar="K",
        help=f"custodian intermediates below Company-X, 0..{MAX_DEPTH} (default 2)",
    )
    parser.add_argument(
        "--alg",
        choices=ALGORITHMS,
        default="p256",
        metavar="ALG",
        help="device key algorithm: %(choices)s (default p256)",
    )


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices", type=integer(1), required=True, metavar="N", help="number of device identities, at least 1"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="fleet directory to write; it must be empty or missing unless --force",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into DIR even when it holds a fleet or other files (an old fleet is replaced)",
    )
    add_chain_arguments(parser)
    parser.add_argument(
        "--san",
        choices=SAN_KINDS,
        default=None,
        metavar="KIND",
        help="give each device a SubjectAlternativeName with its own DNS name "
        f"(<id>{SAN_DNS_SUFFIX}), URI ({SAN_URI_PREFIX}<id>) or both: %(choices)s "
        "(default: none, the device id is only the CN)",
    )
    parser.add_argument(
        "--seed", default=None, metavar="S", help="make the fleet reproducible from this text (not with --alg rsa2048)"
    )
    parser.add_argument(
        "--workers", type=integer(1), default=None, metavar="W", help="processes, at least 1 (default: all CPUs)"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _refused(message: str) -> int:
    print(f"certstorm fleet: error: {message}", file=sys.stderr)
    return 2


def fleet_command(args: argparse.Namespace) -> int:
    """Refuses to write into a directory that holds anything without ``--force``: an old fleet there would
    be replaced, whatever its size."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _refused(f"argument --out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        what = "a fleet" if (out / META_FILE).exists() else "files"
        return _refused(
            f"argument --out: {out} already holds {what}; choose an empty or new directory, "
            "or add --force to write over it"
        )
    if args.seed is not None and args.alg == "rsa2048":
        return _refused(
            "argument --seed: rsa2048 keys cannot be derived from a seed; leave out --seed or "
            "choose --alg p256, p384 or ed25519"
        )
    started = time.perf_counter()
    try:
        fleet = generate_fleet(
            args.out,
            args.devices,
            depth=args.depth,
            alg=args.alg,
            seed=args.seed,
            workers=args.workers,
            progress=getattr(args, "progress", True),
            san=getattr(args, "san", None),
        )
    except ValueError as exc:
        return _refused(str(exc))
    seconds = time.perf_counter() - started
    n = len(fleet)
    on_disk = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(
        f"fleet: {n} devices ({fleet.alg}, depth {fleet.depth}) in {seconds:.1f} s = "
        f"{n / seconds:,.0f} devices/s, {fleet.record_size} bytes per device record "
        f"({on_disk / n:.1f} on disk) -> {args.out}"
    )
    out = Path(args.out).resolve()
    print(f"the CA a broker must trust (Company-X): {out / CA_FILE}")
    print(f"the intermediates every device presents: {out / CHAIN_FILE}")
    fleet.close()
    return 0
