"""The hub's supervisor: prepares the shared state, forks the workers, replaces dead ones, stops cleanly.

Start-up, in order: a private run directory (metrics files, quota bucket, lockout table, live worker
pids); the SQLite schema; the guard file with the challenge secret (:mod:`hubsim.service.guard`); the
management token (:mod:`hubsim.service.credential`); the port. With ``SO_REUSEPORT`` (Linux) the
supervisor binds the port without listening, which reserves it and resolves ``--port 0``, and every worker
listens on a socket of its own, so the kernel spreads connections; elsewhere the workers share one
listening socket. Workers report ready through a pipe; then the supervisor prints the URL.

A dead worker is replaced (at once the first time, with growing delays if it keeps dying soon after
starting) and its live gauges are dropped. On SIGTERM or SIGINT workers finish in-flight requests, flush
the device registry and exit; any still running after the grace period are killed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hubsim.engine import EnginePolicy
from hubsim.service import store as sqlstore
from hubsim.service.credential import resolve_access
from hubsim.service.guard import DEFAULT_SLOTS, ensure_guard_file
from hubsim.service.lockout import create_lockout_file
from hubsim.service.quota import Quota, create_bucket_file

if TYPE_CHECKING:
    from hubsim.service.mqtts import MqttsSettings

log = logging.getLogger("certstorm.hub")
READY_TIMEOUT = 60.0
STOP_GRACE = 15.0


def default_db() -> Path:
    """Where the hub keeps its state without ``--db``: a per-user state directory, never the current one
    (the database and its side files, the 25 MB guard among them, would litter whatever folder the hub was
    started in). ``$XDG_STATE_HOME/certstorm/hub.db``, else ``~/.local/state/certstorm/hub.db``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base, "certstorm", "hub.db")


@dataclass
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 0  # 0: one per CPU
    db: str = field(default_factory=lambda: str(default_db()))
    quota: Quota | None = None
    replay_slots: int = DEFAULT_SLOTS
    policy: EnginePolicy = field(default_factory=EnginePolicy)
    management: str = "token"  # token | open | off (hubsim.service.credential)
    admin_token_file: str | None = None
    mqtts: MqttsSettings | None = None  # the MQTT-over-TLS listener, off when None


@dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    failures: int = 0  # consecutive quick deaths
    respawn_at: float | None = None


class Supervisor:
    """The hub's supervisor. A service of the same family (DPS) subclasses it: :attr:`name`,
    :meth:`initialise_store`, :meth:`make_worker_config` and :meth:`worker_main` are its hooks."""

    name = "hub"

    def __init__(self, config: HubConfig, out=None):
        self.config = config
        self.out = out or sys.stdout
        self.count = config.workers or os.cpu_count() or 1
        self.reuse_port = sys.platform.startswith("linux") and hasattr(__import__("socket"), "SO_REUSEPORT")
        self.workers = [_Worker(i) for i in range(self.count)]
        self.rundir = ""
        self.port = config.port
        self._sock = None
        self._mqtts_sock = None
        self.mqtts_port = 0
        self.tls_files = None
        self._stop = False
        self._worker_config = None
        self._lock = None
        self.access = None

    # -- start-up ---------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        config = self.config
        _raise_open_file_limit()
        self.rundir = tempfile.mkdtemp(prefix="certstorm-hub-")
        metrics_dir = os.path.join(self.rundir, "metrics")
        os.mkdir(metrics_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        import prometheus_client.values as values

        if not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus-client was imported before the directory existed: switch it to shared files now.
            values.ValueClass = values.MultiProcessValue()

        db = self._db = os.path.abspath(config.db)
        if os.path.dirname(db):
            os.makedirs(os.path.dirname(db), exist_ok=True)
        # One hub per database: a second one would trim the change log under the first one's workers
        # and throttle with a bucket of its own. The lock lives as long as any of our processes.
        self._lock = open(db + ".lock", "a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"another {self.name} is already using {db}") from None
        self.access, created = resolve_access(config.management, config.admin_token_file, db, config.host)
        if created:
            log.info("new management token in %s", self.access.path)
        self.initialise_store(db)
        guard_path = db + ".guard"
        if ensure_guard_file(guard_path, slots=config.replay_slots):
            log.info("new challenge secret in %s", guard_path)
        lockout_path = os.path.join(self.rundir, "lockout")
        create_lockout_file(lockout_path)
        quota_path = None
        if config.quota is not None:
            quota_path = os.path.join(self.rundir, "quota")
            create_bucket_file(quota_path, config.quota)

        self._sock = self._bind(config.port)
        self.port = self._sock.getsockname()[1]
        if config.mqtts is not None:
            from hubsim.service.tlsfiles import ensure_hub_tls

            self.tls_files = ensure_hub_tls(db, config.host, self.name)
            self._mqtts_sock = self._bind(config.mqtts.port)
            self.mqtts_port = self._mqtts_sock.getsockname()[1]

        common = {
            "db": db,
            "guard_path": guard_path,
            "quota_path": quota_path,
            "quota_label": config.quota.label if config.quota else None,
            "workers_file": os.path.join(self.rundir, "workers"),
            "policy": config.policy,
            "management": self.access,
            "lockout_path": lockout_path,
        }
        self._worker_config = lambda index: self.make_worker_config(index=index, **common)

    # -- hooks for a service of the same family --------------------------------------------------------
    def initialise_store(self, db: str) -> None:
        """Create or upgrade the database schema (before any worker starts)."""
        sqlstore.initialise(db)

    def make_worker_config(self, **fields):
        from hubsim.service.hub import WorkerConfig

        return WorkerConfig(**fields)

    def worker_main(self, config, sock, ready_fd: int, supervisor_pid: int, listener) -> int:
        """A worker's whole life (in the forked child); returns its exit status."""
        from hubsim.service.worker import run_worker

        return run_worker(config, sock, ready_fd, supervisor_pid, listener)

    def banner(self) -> str:
        """The line printed once every worker listens (tests and scripts read the URL from it)."""
        quota = self.config.quota
        return (
            f"certstorm {self.name} serving {self.url} with {self.count} worker(s); "
            f"db {os.path.abspath(self.config.db)}"
            + (f"; quota {quota.label} = {quota.rate:g} connections/s" if quota else "")
        )

    def _bind(self, port: int):
        from hubsim.service.worker import listening_socket

        if self.reuse_port and port:
            # SO_REUSEPORT would let us share a port another hub of this user already serves, and
            # split its clients with it: make sure the port is free first.
            listening_socket(self.config.host, port, reuse_port=False, listen=False).close()
        return listening_socket(self.config.host, port, reuse_port=self.reuse_port, listen=not self.reuse_port)

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def _spawn(self, worker: _Worker, wait_ready: bool) -> None:
        read_fd, write_fd = os.pipe()
        supervisor_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_fd)
            code = 1
            try:
                from hubsim.service.worker import listening_socket

                mqtts = None
                if self.reuse_port:
                    self._sock.close()
                    sock = listening_socket(self.config.host, self.port, reuse_port=True)
                    if self._mqtts_sock is not None:
                        self._mqtts_sock.close()
                        mqtts = listening_socket(self.config.host, self.mqtts_port, reuse_port=True)
                else:
                    sock, mqtts = self._sock, self._mqtts_sock
                listener = None if mqtts is None else (mqtts, self.tls_files, self.config.mqtts)
                code = self.worker_main(self._worker_config(worker.index), sock, write_fd, supervisor_pid, listener)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        os.close(write_fd)
        worker.pid = pid
        worker.started = time.monotonic()
        worker.respawn_at = None
        try:
            if wait_ready:
                ready, _, _ = select.select([read_fd], [], [], READY_TIMEOUT)
                if not ready or os.read(read_fd, 1) != b"1":
                    raise RuntimeError(f"worker {worker.index} (pid {pid}) did not start")
        finally:
            os.close(read_fd)
        self._write_workers()

    def _write_workers(self) -> None:
        path = os.path.join(self.rundir, "workers")
        with open(path + ".tmp", "w") as fh:
            fh.write(" ".join(str(w.pid) for w in self.workers if w.pid))
        os.replace(path + ".tmp", path)

    # -- running ----------------------------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._prepare()
            for worker in self.workers:
                self._spawn(worker, wait_ready=True)
                if self._stop:
                    break
            if not self._stop:
                print(self.banner(), file=self.out, flush=True)
                print(self._management_line(), file=self.out, flush=True)
                if self.config.mqtts is not None:
                    host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
                    print(
                        f"certstorm {self.name} MQTT over TLS on mqtts://{host}:{self.mqtts_port} "
                        f"({self.config.mqtts.mode} validation); devices trust the {self.name} CA "
                        f"{self.tls_files.ca}",
                        file=self.out,
                        flush=True,
                    )
            last_checkpoint = time.monotonic()
            while not self._stop:
                self._reap()
                self._respawn_due()
                if time.monotonic() - last_checkpoint >= 1.0:
                    last_checkpoint = time.monotonic()
                    self._checkpoint()
                time.sleep(0.1)
            return 0
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _management_line(self) -> str:
        """How to reach the management endpoints; names the token file, never the token."""
        access = self.access
        if access.mode == "token":
            return (
                f"management endpoints need 'Authorization: Bearer <token>'; the token is in {access.path} "
                f"(id {access.token_id})"
            )
        if access.mode == "open":
            return "management endpoints are open to anyone who reaches this loopback address (--management open)"
        return "management endpoints are off (--management off)"

    def _checkpoint(self) -> None:
        try:
            sqlstore.checkpoint(self._db)
        except Exception as exc:  # a busy database is retried a second later
            log.debug("checkpoint skipped: %s", exc)

    def _on_signal(self, signum, frame) -> None:
        self._stop = True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._dead(pid, status)

    def _dead(self, pid: int, status: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
        for worker in self.workers:
            if worker.pid != pid:
                continue
            worker.pid = 0
            self._write_workers()
            if self._stop:
                return
            lived = time.monotonic() - worker.started
            worker.failures = worker.failures + 1 if lived < 5.0 else 0
            delay = 0.0 if worker.failures <= 1 else min(10.0, 0.25 * 2 ** (worker.failures - 1))
            log.warning(
                "worker %d (pid %d) %s after %.1f s; restarting in %.2f s",
                worker.index,
                pid,
                _describe(status),
                lived,
                delay,
            )
            worker.respawn_at = time.monotonic() + delay
            from hubsim.service.metrics import count_restart

            count_restart()

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.pid == 0 and worker.respawn_at is not None and worker.respawn_at <= now:
                try:
                    self._spawn(worker, wait_ready=False)
                except OSError:
                    log.exception("could not fork a worker; retrying")
                    worker.respawn_at = now + 1.0

    def _shutdown(self) -> None:
        live = [w for w in self.workers if w.pid]
        for worker in live:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        while any(w.pid for w in self.workers) and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            for worker in self.workers:
                if worker.pid == pid:
                    worker.pid = 0
                    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                        log.warning("worker %d (pid %d) %s while stopping", worker.index, pid, _describe(status))
        for worker in self.workers:
            if worker.pid:
                log.warning(
                    "worker %d (pid %d) did not stop in %.0f s; killing it", worker.index, worker.pid, STOP_GRACE
                )
                try:
                    os.kill(worker.pid, signal.SIGKILL)
                    os.waitpid(worker.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                worker.pid = 0
        for sock in (self._sock, self._mqtts_sock):
            if sock is not None:
                sock.close()
        if self._worker_config is not None:  # prepared in full: the database is there and was served
            self._checkpoint()
        if self.rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()


def _raise_open_file_limit() -> None:
    """Every device connection is a descriptor; the usual soft limit (1024) would cap a worker at about
    a thousand concurrent devices. Raise it to the hard limit (inherited by the workers)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        except ValueError:
            return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def serve(config: HubConfig, out=None) -> int:
    return Supervisor(config, out).run()


__all__ = ["READY_TIMEOUT", "STOP_GRACE", "HubConfig", "Supervisor", "default_db", "serve"]
