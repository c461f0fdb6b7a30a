"""One DPS worker process: the hub's worker life (event loop, signals, the supervisor's pipe) serving
DPS's HTTP front and MQTT listener, with the housekeeping that keeps it in step with the other workers."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from hubsim.dps.core import DpsWorkerConfig, Provisioner
from hubsim.dps.httpapi import DpsApi
from hubsim.service.hub import SYNC_INTERVAL
from hubsim.service.worker import IDLE_TIMEOUT, SHUTDOWN_TIMEOUT, report_ready

log = logging.getLogger("certstorm.dps")


async def serve_dps(config: DpsWorkerConfig, sock, ready_fd: int | None, mqtts=None) -> int:
    """Serve until SIGTERM; returns the exit status."""
    loop = asyncio.get_running_loop()
    core = Provisioner(config)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = web.Server(DpsApi(core).handle, access_log=None, auto_decompress=False, keepalive_timeout=IDLE_TIMEOUT)
    listener = await loop.create_server(server, sock=sock, backlog=1024)
    front = tls_listener = None
    if mqtts is not None:
        from hubsim.dps.mqtts import DpsFront

        tls_sock, files, settings = mqtts
        front = DpsFront(core, files, settings)
        tls_listener = await loop.create_server(front.protocol, sock=tls_sock, backlog=1024)
    report_ready(ready_fd)
    keeper = loop.create_task(_housekeeping(core, stop))
    await stop.wait()
    try:
        listener.close()
        if tls_listener is not None:
            tls_listener.close()
            front.close_all()
        await asyncio.sleep(0)
        server.pre_shutdown()
        await server.shutdown(SHUTDOWN_TIMEOUT)
    finally:
        keeper.cancel()
        try:
            await keeper
        except asyncio.CancelledError:
            pass
        await core.close_async()
        core.close()
    return 0


async def _housekeeping(core: Provisioner, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(SYNC_INTERVAL)
        try:
            core.housekeeping()
        except Exception:
            log.exception("housekeeping failed; retrying at the next interval")


__all__ = ["serve_dps"]
