"""One DPS worker process: the hub's worker life (event loop, signals, the supervisor's pipe, shutdown)
serving DPS's HTTP front and MQTT listener, with the housekeeping that keeps it in step with the other
workers."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from hubsim.dps.core import DpsWorkerConfig, Provisioner
from hubsim.dps.httpapi import DpsApi
from hubsim.service.worker import IDLE_TIMEOUT, keep_house, listen_mqtts, serve_until_stopped

log = logging.getLogger("certstorm.dps")


async def serve_dps(config: DpsWorkerConfig, sock, ready_fd: int | None, mqtts=None) -> int:
    """Serve until SIGTERM; returns the exit status."""
    loop = asyncio.get_running_loop()
    core = Provisioner(config)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = web.Server(DpsApi(core).handle, access_log=None, auto_decompress=False, keepalive_timeout=IDLE_TIMEOUT)
    listeners = [await loop.create_server(server, sock=sock, backlog=1024)]

    def mqtts_front(files, settings):
        from hubsim.dps.mqtts import DpsFront

        return DpsFront(core, files, settings)

    fronts = await listen_mqtts(mqtts, mqtts_front, listeners)
    try:
        await serve_until_stopped(stop, server, listeners, fronts, keep_house(core.housekeeping, stop, log), ready_fd)
    finally:
        await core.close_async()
        core.close()
    return 0


__all__ = ["serve_dps"]
