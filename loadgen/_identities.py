"""Where the swarm's device identities come from, and which of them each worker uses.

* ``--fleet DIR`` opens a fleet made by ``certstorm fleet`` (memory-mapped, O(1) per identity).
* ``--devices N`` derives a fleet at start-up. It is seeded (``--seed``, default ``certstorm-swarm``), so
  every process on every host derives byte-identical identities and the same Company-X CA -- which is what
  lets master and workers on different machines agree without shipping keys around. Derived fleets are
  cached under ``--fleet-cache`` keyed by (seed, count, algorithm, depth): the first process to need one
  generates it in a subprocess (gevent and multiprocessing do not mix) under a file lock, the others wait
  for the lock and open it. ``--seed random`` (and ``rsa2048``, which cannot be seeded) make a fresh fleet
  shared only by the processes of one ``--processes`` run.

Partitioning: worker ``w`` of ``W`` (Locust's ``worker_index`` and the number of indices the master has
handed out) takes devices ``w, w+W, w+2W, ...`` of the first ``limit``. Within one pass over its share a
worker never repeats a device, and no two workers share one, so a pass over the swarm authenticates each
device exactly once. Further passes start again from the first device of the share.
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

from loadgen._fleet import Fleet

DEFAULT_SEED = "certstorm-swarm"


class Partition:
    """Worker ``index`` of ``stride`` over devices ``[0, limit)``."""

    __slots__ = ("index", "stride", "limit", "size")

    def __init__(self, index: int, stride: int, limit: int):
        if stride < 1 or not 0 <= index < stride or limit < 0:
            raise ValueError(f"bad partition: worker {index} of {stride} over {limit} devices")
        self.index, self.stride, self.limit = index, stride, limit
        self.size = len(range(index, limit, stride))

    def device(self, k: int) -> tuple[int, int]:
        """The ``k``-th device this worker uses (k = 0, 1, ...): (device index, pass number)."""
        if self.size == 0:
            raise IndexError("this worker has no devices")
        p, r = divmod(k, self.size)
        return self.index + r * self.stride, p

    def devices(self) -> range:
        return range(self.index, self.limit, self.stride)

    def __repr__(self) -> str:
        return f"Partition(worker {self.index} of {self.stride}, {self.size} of {self.limit} devices)"


def cache_key(seed: str | None, devices: int, alg: str, depth: int, run_token: str = "", san: str | None = None) -> str:
    text = f"{seed!r}/{devices}/{alg}/{depth}/{run_token}" + (f"/san={san}" if san else "")
    return f"{alg}-d{depth}-{devices}-" + (f"san-{san}-" if san else "") + hashlib.sha256(text.encode()).hexdigest()[:16]


def derive_fleet(devices: int, *, alg: str = "p256", depth: int = 2, seed: str | None = DEFAULT_SEED,
                 cache_dir: str | None = None, run_token: str = "", log=None, timeout: float = 3600.0,
                 san: str | None = None) -> Fleet:
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
            log(f"deriving {devices} {alg} device identities (depth {depth}, "
                f"seed {'random' if seed is None else repr(seed)}) into {target}")
        started = time.monotonic()
        code = ("import sys; from loadgen._fleet import generate_fleet; "
                "generate_fleet(sys.argv[1], int(sys.argv[2]), alg=sys.argv[3], depth=int(sys.argv[4]), "
                "seed=None if sys.argv[5] == '' else sys.argv[5], san=sys.argv[6] or None, progress=False)")
        env = dict(os.environ)
        root_dir = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root_dir + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-c", code, str(target), str(devices), alg, str(depth),
                               seed or "", san or ""], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"deriving the fleet failed:\n{proc.stderr[-2000:]}")
        if log:
            log(f"derived {devices} identities in {time.monotonic() - started:.1f} s")
        return Fleet.open(target)
    finally:
        lock.release()
