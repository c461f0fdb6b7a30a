"""The hub as a subprocess on loopback, and plain HTTP calls to it: for ``certstorm run``, the benchmarks
and the tests.

``HubProcess(db).start()`` runs ``python -m hubsim.service --port 0`` (the supervisor picks a free port
and prints its URL), waits until ``/healthz`` answers from every worker, and ``stop()`` sends SIGTERM
and waits for a clean exit. Every request helper opens its own TCP connection unless given one, so
successive calls spread over the workers the way the kernel spreads new connections. ``call`` sends no
credential (as a device would); ``admin`` sends the hub's management token (:meth:`HubProcess.admin_token`).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["HubProcess", "Reply"]


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class HubProcess:
    module = "hubsim.service"  # what ``python -m`` runs (DPS's process runs hubsim.dps)

    def __init__(
        self,
        db: str | os.PathLike,
        *,
        workers: int = 2,
        args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ):
        """``prefix`` goes before the command, e.g. ``("taskset", "-c", "0")`` to pin the hub to a core;
        ``host`` the loopback address to listen on (several services on port 8883 need one each)."""
        self.prefix = tuple(prefix)
        self.bind = host
        self.db = str(db)
        self.workers = workers
        self.args = tuple(args)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.host = ""
        self.port = 0
        self.mqtts_url = ""  # with --mqtts-port: the listener, and the CA file devices must trust
        self.mqtts_port = 0
        self.tls_ca = ""
        self._out = Path(f"{self.db}.stdout")
        self._err = Path(f"{self.db}.stderr")

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> HubProcess:
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            self.module,
            "--host",
            self.bind,
            "--port",
            "0",
            "--workers",
            str(self.workers),
            "--db",
            self.db,
            *self.args,
        ]
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self._out, "wb") as out, open(self._err, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"hub did not print its URL in {timeout} s:\n{self.log()}")
            match = re.search(r"serving (http://\S+)", self._out.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
            else:
                time.sleep(0.05)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        if "--mqtts-port" in self.args:
            while not (match := re.search(r"on (mqtts://\S+) .*trust the \w+ CA (\S+)", self._out.read_text())):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"hub did not print its MQTT listener:\n{self.log()}")
                time.sleep(0.05)
            self.mqtts_url, self.tls_ca = match.group(1), match.group(2)
            self.mqtts_port = urlsplit(self.mqtts_url).port
        self.wait_workers(self.workers, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        text = ""
        for path in (self._out, self._err):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.kill()

    # -- the management credential -------------------------------------------------------------------------
    @property
    def admin_token_path(self) -> str:
        """Where the hub's management token is: --admin-token-file if given, else beside the database."""
        args = list(self.args)
        if "--admin-token-file" in args:  # relative to the hub's working directory, which is ours
            return str(Path(args[args.index("--admin-token-file") + 1]).resolve())
        return self.db + ".admin-token"

    def admin_token(self) -> str:
        """The management token, as an operator on this machine reads it."""
        return Path(self.admin_token_path).read_text().strip()

    # -- HTTP ---------------------------------------------------------------------------------------------
    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=10)

    def admin(self, method: str, path: str, body=None, **kwargs) -> Reply:
        """A management call with the hub's token (``call`` with ``token=``)."""
        return self.call(method, path, body, token=self.admin_token(), **kwargs)

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        json_body=None,
        headers: dict | None = None,
        conn: http.client.HTTPConnection | None = None,
        token: str | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return Reply(reply.status, reply.headers, reply.read())
        finally:
            if own:
                conn.close()

    def healthz(self, conn=None) -> dict:
        reply = self.call("GET", "/healthz", conn=conn)
        if reply.status != 200:
            raise RuntimeError(f"/healthz answered {reply!r}")
        return reply.json()

    def worker_connections(self, attempts: int = 400) -> dict[int, http.client.HTTPConnection]:
        """One open keep-alive connection per worker, keyed by worker pid."""
        found: dict[int, http.client.HTTPConnection] = {}
        for _ in range(attempts):
            conn = self.connect()
            pid = self.healthz(conn)["pid"]
            if pid in found:
                conn.close()
            else:
                found[pid] = conn
            if len(found) == self.workers:
                return found
        for conn in found.values():
            conn.close()
        raise RuntimeError(f"reached only workers {sorted(found)} of {self.workers}")

    def wait_workers(self, count: int, timeout: float = 15.0, exclude: set[int] = frozenset()) -> list[int]:
        """Wait until ``count`` workers (none of them in ``exclude``) are listed and answering."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                pids = self.healthz()["workers"]
                if len(pids) == count and not set(pids) & set(exclude):
                    seen = set()
                    for _ in range(200):
                        seen.add(self.healthz()["pid"])
                        if seen >= set(pids):
                            return pids
                last = pids
            except (OSError, http.client.HTTPException, RuntimeError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"workers not ready in {timeout} s (last: {last}):\n{self.log()}")
