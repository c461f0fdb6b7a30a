"""nginx as a yardstick: a C server's full mutual-TLS handshake (Debian's nginx with the system OpenSSL),
verifying a device's 3-level P-256 chain against the fleet's CA and its intermediates, with no session
resumption; and ``openssl s_time`` as a C client making new connections against it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.broker import ServerProcess, free_port
from hubsim.service.tlsfiles import ensure_hub_tls

__all__ = ["INSTALL_HINT", "Nginx", "nginx_binary", "s_time"]

INSTALL_HINT = "install nginx: apt-get install nginx (Debian/Ubuntu)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Nginx(ServerProcess):
    """``with Nginx(workdir, trusted_pem) as server:`` -- one nginx process (no master) serving ``200 ok``
    over TLS 1.3 to clients whose certificate chains to ``trusted_pem`` (the CA and the intermediates)."""

    def __init__(self, workdir, trusted_pem: bytes, *, prefix: tuple[str, ...] = ()):
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.trusted = self.dir / "clients.pem"
        self.trusted.write_bytes(trusted_pem)
        files = ensure_hub_tls(str(self.dir / "server"), "127.0.0.1")
        self.server_ca = files.ca
        self.port = free_port()
        self.host, self.url = "127.0.0.1", f"https://127.0.0.1:{self.port}"
        conf = self.dir / "nginx.conf"
        temp = {name: self.dir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} error;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {temp["body"]}; proxy_temp_path {temp["proxy"]}; fastcgi_temp_path {temp["fastcgi"]};
  uwsgi_temp_path {temp["uwsgi"]}; scgi_temp_path {temp["scgi"]};
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {files.cert}; ssl_certificate_key {files.key};
    ssl_protocols TLSv1.3; ssl_session_tickets off; ssl_session_cache off;
    ssl_client_certificate {self.trusted}; ssl_verify_client on; ssl_verify_depth 4;
    location / {{ return 200 "ok"; }}
  }}
}}
""")
        self.cmd = [*prefix, binary, "-c", str(conf), "-p", str(self.dir)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Nginx:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.errors()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not listen in {timeout} s: {self.errors()}") from None
                time.sleep(0.05)

    def errors(self) -> str:
        log = self.dir / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


def s_time(server: Nginx, cert: Path, key: Path, seconds: int = 5, prefix: tuple[str, ...] = ()) -> float:
    """``openssl s_time -new`` with a device's certificate against ``server``: connections per user
    CPU-second of the client, as it reports them."""
    done = subprocess.run(
        [
            *prefix,
            "openssl",
            "s_time",
            "-connect",
            f"{server.host}:{server.port}",
            "-new",
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-CAfile",
            str(server.server_ca),
            "-time",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    found = re.findall(r"([0-9.]+) connections/user sec", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"openssl s_time failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return float(found[0])
