"""Mosquitto as a yardstick: a real MQTT broker admitting devices by client certificate, started on
loopback for the tests and benchmarks (``require_certificate true``, the fleet's registered CA as
``cafile``, ``use_identity_as_username true``), with its own server certificate made like the hub's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from hubsim.service.tlsfiles import ensure_hub_tls

INSTALL_HINT = "install Mosquitto: apt-get install mosquitto mosquitto-clients (Debian/Ubuntu)"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server a benchmark starts (``start()`` returns it) and stops: terminated, killed after 10 s."""

    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> ServerProcess:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Mosquitto(ServerProcess):
    """``with Mosquitto(workdir, ca_certificate) as broker:`` -- ``broker.url`` (mqtts://127.0.0.1:port),
    ``broker.server_ca`` (the file clients trust), ``broker.pid``."""

    def __init__(self, workdir, ca_certificate, *, prefix: tuple[str, ...] = ()):
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = binary
        self.prefix = tuple(prefix)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cafile = self.dir / "device-ca.pem"
        self.cafile.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
        files = ensure_hub_tls(str(self.dir / "broker"), "127.0.0.1")
        self.server_ca = files.ca
        self.port = free_port()
        self.url = f"mqtts://127.0.0.1:{self.port}"
        self.log = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "persistence false",
                    "user root" if os.geteuid() == 0 else "",  # as root it would switch to a user that cannot read here
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {self.cafile}",
                    f"certfile {files.cert}",
                    f"keyfile {files.key}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [*self.prefix, self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "mosquitto.stderr", "wb"),
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen in {timeout} s: {self.output()}") from None
                time.sleep(0.05)

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.log, self.dir / "mosquitto.stderr") if p.exists())
