"""Which devices each swarm worker uses.

Worker ``w`` of ``W`` (Locust's ``worker_index`` and the number of indices the master has handed out)
takes devices ``w, w+W, w+2W, ...`` of the first ``limit``. Within one pass over its share a worker never
repeats a device, and no two workers share one, so a pass over the swarm authenticates each device
exactly once. Further passes start again from the first device of the share.
"""

from __future__ import annotations

__all__ = ["Partition"]


class Partition:
    """Worker ``index`` of ``stride`` over devices ``[0, limit)``."""

    __slots__ = ("index", "limit", "size", "stride")

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
