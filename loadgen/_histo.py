"""Microsecond histograms that merge exactly across workers (Locust's own percentiles are whole milliseconds).

Buckets are log-linear, HdrHistogram style: every value below 1,024 µs has its own bucket, and above that
each power-of-two range is cut into 512 equal buckets, so a recorded value is known to within 0.2 %.
Values are clamped to ``MAX_US`` (about 19 hours). A histogram is one dense ``int64`` array of
``N_BUCKETS`` counts plus an exact count, sum, minimum and maximum, so merging is adding arrays, and
percentiles of a merged histogram are the percentiles of all the values recorded anywhere -- never an
average of per-worker percentiles. Recording is a list append and values are bucketed with numpy in
batches (``flush``), which keeps recording cheap in the generator's hot loop (docs/design.md).
"""

from __future__ import annotations

import math

import numpy as np

SUB = 512  # buckets per power of two above the exact range
EXACT = 2 * SUB  # values 0 .. EXACT-1 have a bucket each
MAX_SHIFT = 27  # largest bucket shift: (2*SUB - 1) << 27 ≈ 1.4e11 µs
MAX_US = ((2 * SUB) << MAX_SHIFT) - 1
N_BUCKETS = EXACT + MAX_SHIFT * SUB
_FLUSH_AT = 8192


def bucket_index(values) -> np.ndarray:
    """Bucket of each value (µs, non-negative integers; larger ones are clamped to ``MAX_US``)."""
    v = np.clip(np.asarray(values, dtype=np.int64), 0, MAX_US)
    out = v.copy()
    big = v >= EXACT
    if big.any():
        vb = v[big]
        bitlen = np.frexp(vb.astype(np.float64))[1].astype(np.int64)  # exact below 2**53
        shift = bitlen - 10  # 1 for 1024..2047, 2 for 2048..4095, ...
        sub = vb >> shift  # 512 .. 1023
        out[big] = EXACT + (shift - 1) * SUB + (sub - SUB)
    return out


def bucket_bounds(index: int) -> tuple[int, int]:
    """[low, high) in µs of bucket ``index``."""
    if index < EXACT:
        return index, index + 1
    shift = (index - EXACT) // SUB + 1
    sub = (index - EXACT) % SUB + SUB
    return sub << shift, (sub + 1) << shift


class Histogram:
    __slots__ = ("_buf", "count", "counts", "max", "min", "total")

    def __init__(self):
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.count = 0
        self.total = 0  # exact sum of recorded values, µs
        self.min = None
        self.max = None
        self._buf: list[int] = []

    # -- recording ---------------------------------------------------------------------------------------
    def record(self, us) -> None:
        """Record one value in microseconds (floats are rounded down)."""
        buf = self._buf
        buf.append(int(us))
        if len(buf) >= _FLUSH_AT:
            self.flush()

    def record_many(self, values_us) -> None:
        self.flush()
        arr = np.clip(np.asarray(values_us, dtype=np.int64), 0, MAX_US)
        self._add(arr)

    def flush(self) -> None:
        if self._buf:
            arr = np.clip(np.asarray(self._buf, dtype=np.int64), 0, MAX_US)
            self._buf = []
            self._add(arr)

    def _add(self, arr: np.ndarray) -> None:
        if not arr.size:
            return
        self.counts += np.bincount(bucket_index(arr), minlength=N_BUCKETS)
        self.count += int(arr.size)
        self.total += int(arr.sum())
        lo, hi = int(arr.min()), int(arr.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    # -- merging and transport ---------------------------------------------------------------------------
    def merge(self, other: Histogram) -> Histogram:
        self.flush()
        other.flush()
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
            self.max = other.max if self.max is None else max(self.max, other.max)
        return self

    def to_dict(self) -> dict:
        """Sparse and JSON-safe: what a worker sends to the master."""
        self.flush()
        nz = np.flatnonzero(self.counts)
        return {
            "index": nz.tolist(),
            "counts": self.counts[nz].tolist(),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        h = cls()
        if data["index"]:
            h.counts[np.asarray(data["index"], dtype=np.int64)] = np.asarray(data["counts"], dtype=np.int64)
        h.count, h.total, h.min, h.max = int(data["count"]), int(data["total"]), data["min"], data["max"]
        return h

    # -- reading -----------------------------------------------------------------------------------------
    def percentile(self, q: float) -> float | None:
        """The value at percentile ``q`` (0..100): the middle of its bucket, clamped to the observed range."""
        self.flush()
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        index = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        low, high = bucket_bounds(index)
        value = low if high - low == 1 else (low + high - 1) / 2
        return float(min(max(value, self.min), self.max))

    @property
    def mean(self) -> float | None:
        self.flush()
        return self.total / self.count if self.count else None

    def summary(self) -> dict:
        """count, mean, min, max and p50/p90/p99/p99.9 in µs."""
        self.flush()
        if not self.count:
            return {"count": 0}
        out = {"count": self.count, "mean_us": round(self.mean, 1), "min_us": self.min, "max_us": self.max}
        for q in (50, 90, 99, 99.9):
            out[f"p{q:g}_us"] = self.percentile(q)
        return out


def sparse_counts(values) -> list[list[int]]:
    """``[[bucket, ...], [count, ...]]`` of the values: a few hundred numbers for a second's latencies,
    where a dense histogram holds ``N_BUCKETS``."""
    arr = np.clip(np.asarray(values, dtype=np.float64).astype(np.int64), 0, MAX_US)
    buckets, counts = np.unique(bucket_index(arr), return_counts=True)
    return [buckets.tolist(), counts.tolist()]


def from_sparse(parts) -> Histogram:
    """One histogram of several ``sparse_counts``: its minimum, maximum and sum are those of the buckets'
    bounds and middles, so its percentiles are the buckets' as for any histogram."""
    h = Histogram()
    for buckets, counts in parts:
        if buckets:
            np.add.at(h.counts, np.asarray(buckets, dtype=np.int64), np.asarray(counts, dtype=np.int64))
    nz = np.flatnonzero(h.counts)
    if nz.size:
        h.count = int(h.counts.sum())
        h.min, h.max = bucket_bounds(int(nz[0]))[0], bucket_bounds(int(nz[-1]))[1] - 1
        h.total = int(sum(int(h.counts[i]) * sum(bucket_bounds(int(i))) // 2 for i in nz))
    return h


def merge_all(histograms) -> Histogram:
    out = Histogram()
    for h in histograms:
        out.merge(h)
    return out


__all__ = [
    "EXACT",
    "MAX_US",
    "N_BUCKETS",
    "Histogram",
    "bucket_bounds",
    "bucket_index",
    "from_sparse",
    "merge_all",
    "sparse_counts",
]
