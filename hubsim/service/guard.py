"""The challenge secret, the replay guard and the change generation every hub worker shares, in one
memory-mapped file, ``<db>.guard``, beside the SQLite database.

* **The secret** sits in the header and is kept across restarts, so a challenge can be answered after
  one. A missing or unreadable file makes a new secret, which invalidates every outstanding challenge --
  the safe outcome, because the used-nonce record goes with it.
* **The used nonces** sit in a fixed-size hash table: a claim takes an exclusive ``flock``, looks the
  nonce up in its two candidate buckets (two-choice hashing on its random bytes) and writes it, with its
  token's expiry, into a slot whose entry has expired; nothing needs sweeping. A claim is on every
  proof's path and costs less than an autocommitted SQLite insert (docs/design.md), hence no table there.
* **The change generation** is bumped after administrative writes commit; every worker reads it per
  request and catches up with the database when it moved (:meth:`SharedReplayGuard.generation`).

Safety: a claim records the nonce before the proof is accepted, under a lock the kernel releases if its
holder dies. The nonce is written before its expiry, so a worker killed between the two writes leaves a
slot that reads as free, and the proof it never answered can be sent again. Both buckets full of live
entries: the claim fails closed with ``throttled`` (refusing a proof is safe, forgetting a used nonce is
not). Size the table for (proofs per second) x (challenge lifetime) under about half the slots: the
default 2^20 slots are 24 MiB and hold about 17,000 proofs/s with 30 s challenges. Durability: the
shared mapping's writes survive a worker or hub crash; an operating-system crash may lose the last
seconds of claims, and with them the guarantee for the challenges still live at that moment.
"""

from __future__ import annotations

import os
import struct

from hubsim.errors import AuthError
from hubsim.service.sharedfile import SharedFile, create_shared_file

MAGIC = b"CSTMGRD1"
HEADER_BYTES = 4096
SECRET_BYTES = 32
SLOTS_PER_BUCKET = 16
DEFAULT_SLOTS = 1 << 20
_HEADER = struct.Struct("<8sII32s")  # magic, buckets, slots per bucket, secret
_NONCE = 16
_BUCKET_BYTES = SLOTS_PER_BUCKET * (8 + _NONCE)  # expiries (float64) first, then the nonces
_EXPIRIES = struct.Struct(f"<{SLOTS_PER_BUCKET}d")
_EXPIRY = struct.Struct("<d")
_NAMES_OFFSET = 8 * SLOTS_PER_BUCKET
_NAMES_BYTES = _NONCE * SLOTS_PER_BUCKET
_GENERATION = struct.Struct("<Q")
_GENERATION_OFFSET = 64  # after the header fields, 8-byte aligned


def _geometry(slots: int) -> int:
    buckets = max(1, slots // SLOTS_PER_BUCKET)
    if buckets & (buckets - 1):
        buckets = 1 << buckets.bit_length()  # round up to a power of two
    return buckets


def ensure_guard_file(path: str, *, slots: int = DEFAULT_SLOTS) -> bool:
    """Create ``path`` with a fresh secret unless a valid guard file is already there.

    Returns True when a new file (and so a new secret) was made. Call it in the supervisor, before any
    worker starts.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            size = os.fstat(fh.fileno()).st_size
        magic, buckets, per_bucket, _secret = _HEADER.unpack(head)
        if (
            magic == MAGIC
            and per_bucket == SLOTS_PER_BUCKET
            and buckets
            and not buckets & (buckets - 1)
            and size == HEADER_BYTES + buckets * _BUCKET_BYTES
        ):
            return False
    except (OSError, struct.error):
        pass
    buckets = _geometry(slots)
    header = _HEADER.pack(MAGIC, buckets, SLOTS_PER_BUCKET, os.urandom(SECRET_BYTES)).ljust(HEADER_BYTES, b"\0")
    create_shared_file(path, header, HEADER_BYTES + buckets * _BUCKET_BYTES, replace=True)  # zero expiry: free
    return True


class SharedReplayGuard(SharedFile):
    """The :class:`hubsim.challenge.ReplayGuard` for several processes; open it in each process."""

    def __init__(self, path: str):
        super().__init__(path, populate=True)  # pre-faulted: claims never take a page fault
        size = len(self._map)
        magic, buckets, per_bucket, secret = _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC or per_bucket != SLOTS_PER_BUCKET or size != HEADER_BYTES + buckets * _BUCKET_BYTES:
            self.close()
            raise ValueError(f"{path} is not a certstorm guard file")
        self.secret = bytes(secret)
        self.buckets = buckets
        self._mask = buckets - 1

    @property
    def slots(self) -> int:
        return self.buckets * SLOTS_PER_BUCKET

    def claim(self, nonce: bytes, expires_at: float, now: float) -> bool:
        if len(nonce) != _NONCE:
            raise ValueError("nonces are 16 bytes")
        mm, mask = self._map, self._mask
        first = HEADER_BYTES + (int.from_bytes(nonce[0:4], "little") & mask) * _BUCKET_BYTES
        second = HEADER_BYTES + (int.from_bytes(nonce[4:8], "little") & mask) * _BUCKET_BYTES
        self._lock()
        try:
            for base in (first, second):
                names = base + _NAMES_OFFSET
                stop = names + _NAMES_BYTES
                hit = mm.find(nonce, names, stop)
                while hit >= 0:
                    slot, misaligned = divmod(hit - names, _NONCE)
                    if not misaligned and _EXPIRY.unpack_from(mm, base + 8 * slot)[0] >= now:
                        return False
                    hit = mm.find(nonce, hit + 1, stop)
            for base in (first, second):
                for slot, expiry in enumerate(_EXPIRIES.unpack_from(mm, base)):
                    if expiry < now:
                        name = base + _NAMES_OFFSET + _NONCE * slot
                        mm[name : name + _NONCE] = nonce  # nonce first: a half-written slot reads as free
                        _EXPIRY.pack_into(mm, base + 8 * slot, expires_at)
                        return True
            raise AuthError("throttled", "too many proofs in flight; retry shortly")
        finally:
            self._unlock()

    # -- the change generation ------------------------------------------------------------------------
    # Administrative writes (CAs, revocations, disables) bump this counter after they commit to SQLite;
    # every worker reads it at the start of each request (a read of shared memory) and catches
    # up with the database when it moved. So a change is in force on every worker for every request
    # that starts after the response to the change was sent.
    def generation(self) -> int:
        return _GENERATION.unpack_from(self._map, _GENERATION_OFFSET)[0]

    def bump_generation(self) -> int:
        self._lock()
        try:
            value = _GENERATION.unpack_from(self._map, _GENERATION_OFFSET)[0] + 1
            _GENERATION.pack_into(self._map, _GENERATION_OFFSET, value)
            return value
        finally:
            self._unlock()

    def live_entries(self, now: float) -> int:
        """How many claims are still live (a full scan: for tests and diagnostics, not the hot path)."""
        count = 0
        for b in range(self.buckets):
            count += sum(1 for e in _EXPIRIES.unpack_from(self._map, HEADER_BYTES + b * _BUCKET_BYTES) if e >= now)
        return count


__all__ = [
    "DEFAULT_SLOTS",
    "HEADER_BYTES",
    "MAGIC",
    "SECRET_BYTES",
    "SLOTS_PER_BUCKET",
    "SharedReplayGuard",
    "ensure_guard_file",
]
