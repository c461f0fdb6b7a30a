"""One hub worker process: an event loop (uvloop when installed), the listening socket, and the
housekeeping timer that keeps the worker in step with the others.

Profiling: with ``CERTSTORM_PROFILE_DIR`` set, each worker runs under cProfile and writes
``worker-<pid>.prof`` there when it stops (wall-clock timer: pin the worker to its own core, e.g.
``taskset -c 0``, so that wall time is CPU time).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time

from aiohttp import web

from hubsim.service.fastpath import DeviceProtocol
from hubsim.service.httpapi import HttpApi
from hubsim.service.hub import SYNC_INTERVAL, Hub, WorkerConfig

log = logging.getLogger("certstorm.hub")
SHUTDOWN_TIMEOUT = 5.0  # seconds in-flight requests get at a clean stop
IDLE_TIMEOUT = 300.0  # seconds a keep-alive connection may stay silent before the hub closes it
IDLE_SWEEP = 10.0


def listening_socket(
    host: str, port: int, *, reuse_port: bool, listen: bool = True, backlog: int = 1024
) -> socket.socket:
    """A TCP socket bound to (host, port). With ``reuse_port`` every worker binds its own socket to the
    same port and the kernel spreads incoming connections over them."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this worker if the supervisor dies without stopping it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _ClientProtocolErrors(logging.Filter):
    """aiohttp logs every unparseable request (bad request line, oversized header...) at ERROR with a
    traceback. Those are the client's fault, already answered with a 4xx, and anyone can produce them
    at will: keep them out of the log. Everything else aiohttp logs is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(
    config: WorkerConfig, sock: socket.socket, ready_fd: int | None, supervisor_pid: int, mqtts=None, serve=None
) -> int:
    """The worker's whole life; returns its exit status. ``mqtts``: (listening socket, TlsFiles,
    MqttsSettings) for the MQTT-over-TLS listener, or None. ``serve``: the coroutine function that
    serves (default: the hub's; DPS passes its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    logging.getLogger("aiohttp.server").addFilter(_ClientProtocolErrors())
    if os.getppid() != supervisor_pid:
        return 1  # the supervisor died before the request above took effect
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    profile_dir = os.environ.get("CERTSTORM_PROFILE_DIR")
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return loop.run_until_complete((serve or _serve)(config, sock, ready_fd, mqtts))
    finally:
        loop.close()
        if profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"worker-{os.getpid()}.prof"))


async def _serve(config: WorkerConfig, sock: socket.socket, ready_fd: int | None, mqtts=None) -> int:
    loop = asyncio.get_running_loop()
    hub = Hub(config)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = web.Server(HttpApi(hub).handle, access_log=None, auto_decompress=False, keepalive_timeout=IDLE_TIMEOUT)
    fast: set = set()
    listener = await loop.create_server(lambda: DeviceProtocol(hub, server, fast), sock=sock, backlog=1024)
    front = tls_listener = None
    if mqtts is not None:
        from hubsim.service.mqtts import MqttsFront

        tls_sock, files, settings = mqtts
        front = MqttsFront(hub, files, settings)
        tls_listener = await loop.create_server(front.protocol, sock=tls_sock, backlog=1024)
    report_ready(ready_fd)
    keeper = loop.create_task(_housekeeping(hub, stop, fast))
    await stop.wait()
    try:
        listener.close()  # stop accepting
        if tls_listener is not None:
            tls_listener.close()
            front.close_all()
        for protocol in list(fast):  # device connections never hold a request across callbacks
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.sleep(0)
        server.pre_shutdown()  # idle aiohttp connections close, busy ones finish their request
        await server.shutdown(SHUTDOWN_TIMEOUT)
    finally:
        keeper.cancel()
        try:
            await keeper
        except asyncio.CancelledError:
            pass
        hub.close()  # flushes the registry write-behind and the metrics
    return 0


def report_ready(ready_fd: int | None) -> None:
    """Tell the supervisor this worker listens (one byte down the pipe it gave)."""
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        except OSError:
            pass


async def _housekeeping(hub: Hub, stop: asyncio.Event, fast: set) -> None:
    loop = asyncio.get_running_loop()
    next_sweep = loop.time() + IDLE_SWEEP
    while not stop.is_set():
        await asyncio.sleep(SYNC_INTERVAL)
        try:
            hub.housekeeping()
        except Exception:
            log.exception("housekeeping failed; retrying at the next interval")
        if loop.time() >= next_sweep:
            # Idle device connections (aiohttp applies the same timeout to the ones it holds).
            next_sweep = loop.time() + IDLE_SWEEP
            since = time.monotonic() - IDLE_TIMEOUT
            for protocol in list(fast):
                protocol.close_if_idle(since)


__all__ = ["IDLE_SWEEP", "IDLE_TIMEOUT", "SHUTDOWN_TIMEOUT", "listening_socket", "report_ready", "run_worker"]
