"""A file every hub worker maps into memory and changes under an exclusive ``flock``: the base of the
replay guard, the quota bucket and the lockout table.

Each worker opens the file itself after the fork: ``flock`` excludes only other *open file
descriptions*, so a descriptor inherited across ``fork`` would not lock against its sibling. The kernel
releases the lock of a worker that dies holding it.
"""

from __future__ import annotations

import fcntl
import mmap
import os

__all__ = ["SharedFile", "create_shared_file"]


def create_shared_file(path: str, header: bytes, size: int, *, replace: bool = False) -> None:
    """Write ``header`` followed by zeros up to ``size`` bytes, owner-only; made by the supervisor before
    any worker starts. With ``replace`` the file is written beside ``path``, synced and moved over it, so
    a reader never sees half of it. The zeros are written, not left sparse, so that no worker allocates a
    block inside a lock."""
    target = f"{path}.new-{os.getpid()}" if replace else path
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, header)
        zeros = bytes(min(1 << 20, max(0, size - len(header))))
        remaining = size - len(header)
        while remaining > 0:
            remaining -= os.write(fd, zeros[: min(remaining, len(zeros))])
        if replace:
            os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)


class SharedFile:
    """The mapping of one shared file and its lock. ``populate`` faults every page in at once, so that
    nothing under the lock waits for a page fault."""

    def __init__(self, path: str, size: int | None = None, *, populate: bool = False):
        self._fd = os.open(path, os.O_RDWR)
        try:
            length = size if size is not None else os.fstat(self._fd).st_size
            flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
            self._map = mmap.mmap(self._fd, length, flags=flags)
        except Exception:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
