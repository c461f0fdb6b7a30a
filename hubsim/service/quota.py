"""Connection throttling: Azure IoT Hub's new-connection quotas as presets, or a plain rate.

``--quota`` takes ``S1``, ``S2`` or ``S3`` with an optional unit count (``S2:4``), or connections per
second (``250``, ``12.5``). The presets follow IoT Hub's documented throttle for new device connections:
S1 = max(100/s, 12/s per unit), S2 = 120/s per unit, S3 = 6,000/s per unit, up to 200 units for S1/S2
and 10 for S3.

Only new device connections (``POST /devices/challenge``) are charged: over the rate the hub answers 429
``throttled`` with ``Retry-After`` (whole seconds, at least 1) and does no cryptography. The bucket is a
small memory-mapped file every worker takes under ``flock``, so the limit is exact for the hub however
the kernel spreads connections. It holds one second's worth of tokens, so a burst of up to one second's
quota passes before refusals start, as IoT Hub absorbs short bursts.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
import time
from dataclasses import dataclass

from hubsim.service.sharedfile import SharedFile, create_shared_file

PRESETS = {
    # name: (per-unit rate, floor, maximum units)
    "S1": (12.0, 100.0, 200),
    "S2": (120.0, 0.0, 200),
    "S3": (6000.0, 0.0, 10),
}
_SPEC = re.compile(r"^(S[123])(?::(\d+))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Quota:
    rate: float  # connections per second for the whole hub
    burst: float  # tokens the bucket holds
    label: str  # what the operator asked for, for logs and /healthz


def parse_quota(text: str | None) -> Quota | None:
    """``None``/"none"/"0" mean unlimited. Raises ValueError with a readable message otherwise."""
    if text is None:
        return None
    spec = text.strip()
    if spec.lower() in ("", "none", "off", "0"):
        return None
    match = _SPEC.match(spec)
    if match:
        name = match.group(1).upper()
        units = int(match.group(2) or 1)
        per_unit, floor, max_units = PRESETS[name]
        if not 1 <= units <= max_units:
            raise ValueError(f"{name} takes 1 to {max_units} units, not {units}")
        rate = max(floor, per_unit * units)
        label = f"{name}:{units}"
    else:
        try:
            rate = float(spec)
        except ValueError:
            raise ValueError(
                f"quota must be S1, S2 or S3 with an optional ':units', or a rate per second; got {text!r}"
            ) from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"quota rate must be a non-negative number, got {text!r}")
        if rate == 0:
            return None
        label = f"{rate:g}/s"
    return Quota(rate, max(1.0, rate), label)


_STATE = struct.Struct("<dddd")  # tokens, last refill (CLOCK_MONOTONIC seconds), rate, burst


def create_bucket_file(path: str, quota: Quota) -> None:
    """Written by the supervisor before workers start: a full bucket."""
    create_shared_file(path, _STATE.pack(quota.burst, time.monotonic(), quota.rate, quota.burst), mmap.PAGESIZE)


class SharedTokenBucket(SharedFile):
    """A token bucket in a shared file; open it in each process."""

    def __init__(self, path: str, clock=time.monotonic):
        super().__init__(path, mmap.PAGESIZE)
        self._clock = clock
        _, _, self.rate, self.burst = _STATE.unpack_from(self._map, 0)

    def take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one will be available."""
        mm = self._map
        self._lock()
        try:
            tokens, last, rate, burst = _STATE.unpack_from(mm, 0)
            now = self._clock()
            tokens = min(burst, tokens + (now - last) * rate) if now > last else tokens
            if tokens >= 1.0:
                _STATE.pack_into(mm, 0, tokens - 1.0, now, rate, burst)
                return 0.0
            _STATE.pack_into(mm, 0, tokens, now, rate, burst)
            return (1.0 - tokens) / rate
        finally:
            self._unlock()


def retry_after_header(wait: float) -> str:
    return str(max(1, math.ceil(wait)))


__all__ = ["PRESETS", "Quota", "SharedTokenBucket", "create_bucket_file", "parse_quota", "retry_after_header"]
