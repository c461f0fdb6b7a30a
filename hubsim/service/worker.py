"""One hub worker process: an event loop (uvloop when installed), the listening socket, and the
housekeeping timer that keeps the worker in step with the others.

Profiling: with ``CERTSTORM_PROFILE_DIR`` set, each worker runs under cProfile and writes
``worker-<pid>.prof`` there when it stops (wall-clock timer: pin the worker to its own core, e.g.
``taskset -c 0``, so that wall time is CPU time).
"""

from __future__ import annotations

import asyncio
import contextlib
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
    listeners = [await loop.create_server(lambda: DeviceProtocol(hub, server, fast), sock=sock, backlog=1024)]

    def mqtts_front(files, settings):
        from hubsim.service.mqtts import MqttsFront

        return MqttsFront(hub, files, settings)

    def close_devices() -> None:  # device connections never hold a request across callbacks
        for protocol in list(fast):
            if protocol.transport is not None:
                protocol.transport.close()

    def sweep_idle() -> None:  # aiohttp applies the same timeout to the connections it holds
        since = time.monotonic() - IDLE_TIMEOUT
        for protocol in list(fast):
            protocol.close_if_idle(since)

    fronts = await listen_mqtts(mqtts, mqtts_front, listeners)
    try:
        keeper = keep_house(hub.housekeeping, stop, log, sweep=sweep_idle)
        await serve_until_stopped(stop, server, listeners, fronts, keeper, ready_fd, close_devices=close_devices)
    finally:
        hub.close()  # flushes the registry write-behind and the metrics
    return 0


async def listen_mqtts(mqtts, make_front, listeners: list) -> list:
    """The MQTT front of ``mqtts`` (its socket, TLS files and settings), listening; its listener joins
    ``listeners``. No front without ``mqtts``."""
    if mqtts is None:
        return []
    tls_sock, files, settings = mqtts
    front = make_front(files, settings)
    listeners.append(await asyncio.get_running_loop().create_server(front.protocol, sock=tls_sock, backlog=1024))
    return [front]


async def serve_until_stopped(
    stop: asyncio.Event,
    server: web.Server,
    listeners: list,
    fronts: list,
    keeper,
    ready_fd: int | None,
    *,
    close_devices=None,
) -> None:
    """A worker's life once it listens: tell the supervisor, keep house until ``stop``, then stop accepting,
    close the device connections and let aiohttp finish the requests in hand."""
    report_ready(ready_fd)
    task = asyncio.get_running_loop().create_task(keeper)
    await stop.wait()
    try:
        for listener in listeners:
            listener.close()
        for front in fronts:
            front.close_all()
        if close_devices is not None:
            close_devices()
        await asyncio.sleep(0)
        server.pre_shutdown()  # idle aiohttp connections close, busy ones finish their request
        await server.shutdown(SHUTDOWN_TIMEOUT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def report_ready(ready_fd: int | None) -> None:
    """Tell the supervisor this worker listens (one byte down the pipe it gave)."""
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        except OSError:
            pass


async def keep_house(housekeeping, stop: asyncio.Event, logger: logging.Logger, *, sweep=None) -> None:
    """``housekeeping()`` every SYNC_INTERVAL and ``sweep()`` every IDLE_SWEEP until ``stop``; a failure is
    logged and tried again at the next interval."""
    loop = asyncio.get_running_loop()
    next_sweep = loop.time() + IDLE_SWEEP
    while not stop.is_set():
        await asyncio.sleep(SYNC_INTERVAL)
        try:
            housekeeping()
        except Exception:
            logger.exception("housekeeping failed; retrying at the next interval")
        if sweep is not None and loop.time() >= next_sweep:
            next_sweep = loop.time() + IDLE_SWEEP
            sweep()


__all__ = [
    "IDLE_SWEEP",
    "IDLE_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "keep_house",
    "listen_mqtts",
    "listening_socket",
    "report_ready",
    "run_worker",
    "serve_until_stopped",
]
