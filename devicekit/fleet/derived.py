"""Derived fleets: the same device identities, made on demand by every process that asks for them.

A fleet derived with ``derive_fleet(N)`` (the swarm's ``--devices N``) is seeded (default
``certstorm-swarm``), so every process on every host derives byte-identical identities and the same
Company-X CA: master and workers on different machines agree without shipping keys around. Derived fleets
are cached keyed by (seed, count, algorithm, depth, SAN kind): the first process to need one generates it
in a subprocess (gevent and multiprocessing do not mix) under a file lock, the others wait for the lock
and open it. An unseeded fleet (``seed=None``, and ``rsa2048``, which cannot be seeded) is shared only by
the processes that pass the same ``run_token``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from devicekit.fleet.reader import Fleet

__all__ = ["DEFAULT_SEED", "cache_key", "derive_fleet"]

DEFAULT_SEED = "certstorm-swarm"


def cache_key(seed: str | None, devices: int, alg: str, depth: int, run_token: str = "", san: str | None = None) -> str:
    text = f"{seed!r}/{devices}/{alg}/{depth}/{run_token}" + (f"/san={san}" if san else "")
    return (
        f"{alg}-d{depth}-{devices}-" + (f"san-{san}-" if san else "") + hashlib.sha256(text.encode()).hexdigest()[:16]
    )


def derive_fleet(
    devices: int,
    *,
    alg: str = "p256",
    depth: int = 2,
    seed: str | None = DEFAULT_SEED,
    cache_dir: str | None = None,
    run_token: str = "",
    log=None,
    timeout: float = 3600.0,
    san: str | None = None,
) -> Fleet:
    """Open the cached derived fleet, generating it first if no process has yet (``san``: as ``certstorm
    fleet --san``)."""
    if seed is not None and seed.lower() in ("random", "none", ""):
        seed = None
    if alg == "rsa2048":
        seed = None  # RSA keys cannot be derived from a seed
    root = Path(cache_dir or Path(tempfile.gettempdir()) / "certstorm-fleets")
    root.mkdir(parents=True, exist_ok=True)
    target = root / cache_key(seed, devices, alg, depth, "" if seed is not None else run_token, san)
    # Under Locust, time.sleep is gevent's, so FileLock's polling leaves the other greenlets (heartbeats
    # included) running while another process derives the fleet.
    lock = FileLock(target.with_suffix(".lock"), timeout=timeout, poll_interval=0.2)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"waited {timeout:.0f} s for another process to derive {target}") from None
    try:
        try:
            return Fleet.open(target)
        except ValueError:
            pass
        if log:
            log(
                f"deriving {devices} {alg} device identities (depth {depth}, "
                f"seed {'random' if seed is None else repr(seed)}) into {target}"
            )
        started = time.monotonic()
        code = (
            "import sys; from devicekit.fleet import generate_fleet; "
            "generate_fleet(sys.argv[1], int(sys.argv[2]), alg=sys.argv[3], depth=int(sys.argv[4]), "
            "seed=None if sys.argv[5] == '' else sys.argv[5], san=sys.argv[6] or None, progress=False)"
        )
        env = dict(os.environ)
        root_dir = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root_dir + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, "-c", code, str(target), str(devices), alg, str(depth), seed or "", san or ""],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"deriving the fleet failed:\n{proc.stderr[-2000:]}")
        if log:
            log(f"derived {devices} identities in {time.monotonic() - started:.1f} s")
        return Fleet.open(target)
    finally:
        lock.release()
