"""A generic HTTP client for the hub's device API: aiohttp's ClientSession with every default (its own
connection pool and keep-alive), many devices at once. The saturation benchmark runs it in a process of
its own to show what a client that knows nothing of the hub costs the hub beside the Locust swarm.

    python -m bench.generic_client --url http://127.0.0.1:8080 --fleet DIR --start 0 --stop 5000 --concurrency 40

Prints one JSON line: {"admitted": N, "first_connection": N, "failed": {code: N}, "seconds": S}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import sys
import time

import aiohttp

from devicekit.fleet import Fleet
from hubsim.argtypes import integer


async def authenticate_range(url: str, fleet: Fleet, indices, concurrency: int) -> dict:
    """Challenge and proof for every device in ``indices`` over ``concurrency`` tasks sharing one session."""
    todo = iter(indices)
    outcome = {"admitted": 0, "first_connection": 0, "failed": collections.Counter()}

    async def post(session, path: str, body: bytes, content_type: str) -> dict | None:
        async with session.post(url + path, data=body, headers={"Content-Type": content_type}) as reply:
            data = await reply.json(content_type=None)
            if reply.status >= 300:
                outcome["failed"][f"{reply.status}:{data.get('error', '?')}"] += 1
                return None
            return data

    async def device_loop(session):
        for index in todo:  # one iterator shared by every task: each device is taken once
            ident = fleet.identity(index)
            issued = await post(session, "/devices/challenge", ident.chain_pem(), "application/x-pem-file")
            if issued is None:
                continue
            signature = ident.sign(base64.b64decode(issued["challenge"]))
            proof = json.dumps(
                {"challenge": issued["challenge"], "signature": base64.b64encode(signature).decode()}
            ).encode()
            admitted = await post(session, "/devices/proof", proof, "application/json")
            if admitted is not None:
                outcome["admitted"] += 1
                outcome["first_connection"] += bool(admitted.get("first_connection"))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(device_loop(session) for _ in range(concurrency)))
    return outcome


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generic_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the hub, e.g. http://127.0.0.1:8080")
    parser.add_argument("--fleet", required=True, metavar="DIR", help="a fleet made by certstorm fleet")
    parser.add_argument("--start", type=integer(0), default=0, metavar="I", help="first device index (default 0)")
    parser.add_argument("--stop", type=integer(1), required=True, metavar="J", help="one past the last device index")
    parser.add_argument(
        "--concurrency", type=integer(1), default=40, metavar="N", help="devices in flight at once (default 40)"
    )
    args = parser.parse_args(argv)
    try:
        fleet = Fleet.open(args.fleet)
    except ValueError as exc:
        parser.error(f"argument --fleet: {exc}")
    if not args.start < args.stop <= len(fleet):
        parser.error(f"argument --stop: must be above --start and at most the fleet's {len(fleet)} devices")
    started = time.perf_counter()
    outcome = asyncio.run(
        authenticate_range(args.url.rstrip("/"), fleet, range(args.start, args.stop), args.concurrency)
    )
    outcome["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(outcome))
    return 0 if not outcome["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
