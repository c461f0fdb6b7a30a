"""SoftHSM2 tokens for the tests, each in a temporary directory of its own (``SOFTHSM2_CONF``). Skipped with
an install hint where softhsm2 is missing -- except in CI (CI=true), where ``.ci/run`` installs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from devicekit.hsm import DEFAULT_MODULE

INSTALL_HINT = "install softhsm2 (Debian/Ubuntu: apt-get install softhsm2 opensc libengine-pkcs11-openssl)"
ROOT = Path(__file__).resolve().parent.parent
SO_PIN = "87654321"


def require_softhsm() -> None:
    if any(shutil.which(tool) is None for tool in ("softhsm2-util", "pkcs11-tool")) or not os.path.isfile(
        DEFAULT_MODULE
    ):
        if os.environ.get("CI") == "true":
            pytest.fail(f"softhsm2 is missing in CI: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)


class SoftHsm:
    """A SoftHSM2 token directory: tokens made with ``softhsm2-util`` as an operator would, PIN files mode 600."""

    def __init__(self, root: Path):
        self.root = root
        (root / "tokens").mkdir(parents=True, exist_ok=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        self.env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def token(self, name: str, pin: str | None = None) -> tuple[str, str]:
        """A new token (its label made unique) and the path of a PIN file only its owner can read."""
        label = f"{name}-{uuid.uuid4().hex[:8]}"
        pin = pin or uuid.uuid4().hex[:12]
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", SO_PIN],
            env=self.env,
            check=True,
            capture_output=True,
        )
        return label, self.pin_file(label, pin)

    def pin_file(self, name: str, pin: str, mode: int = 0o600) -> str:
        path = self.root / f"{name}.pin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(pin + "\n")
        os.chmod(path, mode)
        return str(path)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """A tool (softhsm2-util, pkcs11-tool) on these tokens, as an operator runs it."""
        return subprocess.run(args, env=self.env, check=True, capture_output=True, text=True, timeout=60)

    def certstorm(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """``certstorm ARGS`` in a process of its own with these tokens."""
        return subprocess.run(
            [sys.executable, "-m", "certstorm", *args],
            cwd=cwd or self.root,
            env={**self.env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory):
    """This module's token directory; the tests' own process uses it too (the PKCS#11 module is initialised
    again when a token it has not seen is asked for)."""
    require_softhsm()
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    yield hsm
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before
