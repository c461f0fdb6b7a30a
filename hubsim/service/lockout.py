"""Slowing down credential guessing: refused management credentials counted per client address, shared
by every worker process.

Each address (IPv4, or an IPv6 /64, since one host easily holds a whole /64) owes a debt: each bad
credential adds one, and it drains at ``drain_per_second``. From ``burst`` on, its management calls get
429 with ``Retry-After`` before any token is compared: ``burst`` quick tries, then one every
``1 / drain_per_second`` seconds, however many connections or workers it spreads them over. The table
is a small memory-mapped file under ``flock``, set-associative (:data:`SETS` x :data:`WAYS`, keyed by
BLAKE2b of the address under a key made at start-up) so it never grows: pushing one's own entry out
takes addresses whose keyed hashes collide, which nobody outside can compute. There is deliberately no
hub-wide limit: it would let anyone lock the operator out, while a 256-bit token stays out of reach of
any number of guessers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import struct
import time
from dataclasses import dataclass

from hubsim.service.sharedfile import SharedFile, create_shared_file


@dataclass(frozen=True)
class LockoutPolicy:
    burst: float = 10.0  # bad credentials an address may send in quick succession
    drain_per_second: float = 0.5  # then one more every 2 s


SETS = 1024
WAYS = 8
_HEADER = struct.Struct("<8sdd16s")  # magic, burst, drain per second, hash key
_ENTRY = struct.Struct("<16sdd")  # address key, debt, last update (CLOCK_MONOTONIC)
_MAGIC = b"CSTMLCK1"
_HEADER_BYTES = 64
_SIZE = _HEADER_BYTES + SETS * WAYS * _ENTRY.size


def address_key(peer: str | None) -> bytes:
    """What an address is counted by: an IPv4 address, an IPv6 /64, or the peer text as given."""
    text = peer or "unknown"
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.encode()
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped.packed
        return ipaddress.ip_network(f"{address}/64", strict=False).network_address.packed
    return address.packed


def create_lockout_file(path: str, policy: LockoutPolicy = LockoutPolicy()) -> None:
    """Written by the supervisor before workers start: an empty table."""
    create_shared_file(path, _HEADER.pack(_MAGIC, policy.burst, policy.drain_per_second, os.urandom(16)), _SIZE)


class SharedLockout(SharedFile):
    """The failure table in a shared file; open it in each process after fork."""

    def __init__(self, path: str, clock=time.monotonic):
        super().__init__(path, _SIZE)
        self._clock = clock
        magic, self.burst, self.drain, self._key = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC:
            self.close()
            raise RuntimeError(f"{path} is not a lockout table")

    def _find(self, key: bytes, now: float) -> tuple[int, float]:
        """(offset of the address's entry or of the one to take over, its debt now)."""
        base = _HEADER_BYTES + (int.from_bytes(key[:4], "little") % SETS) * WAYS * _ENTRY.size
        spare, spare_debt = base, math.inf
        for way in range(WAYS):
            offset = base + way * _ENTRY.size
            owner, debt, updated = _ENTRY.unpack_from(self._map, offset)
            debt = max(0.0, debt - max(0.0, now - updated) * self.drain)
            if owner == key:
                return offset, debt
            if debt < spare_debt:
                spare, spare_debt = offset, debt
        return spare, 0.0

    def _key_of(self, peer: str | None) -> bytes:
        return hashlib.blake2b(address_key(peer), key=self._key, digest_size=16).digest()

    def _wait(self, debt: float) -> float:
        over = debt - (self.burst - 1.0)
        return over / self.drain if over > 0 else 0.0

    def wait(self, peer: str | None) -> float:
        """Seconds before ``peer`` may try a credential again; 0.0 when it may now."""
        key = self._key_of(peer)
        self._lock()
        try:
            _, debt = self._find(key, self._clock())
        finally:
            self._unlock()
        return self._wait(debt)

    def fail(self, peer: str | None) -> float:
        """Count a bad credential from ``peer``; returns the seconds it must now wait (0.0: none)."""
        key = self._key_of(peer)
        self._lock()
        try:
            now = self._clock()
            offset, debt = self._find(key, now)
            debt += 1.0
            _ENTRY.pack_into(self._map, offset, key, debt, now)
        finally:
            self._unlock()
        return self._wait(debt)


__all__ = ["SETS", "WAYS", "LockoutPolicy", "SharedLockout", "address_key", "create_lockout_file"]
