"""Stateless, authenticated challenge tokens and the replay guard that makes them single-use.

A device's proof may reach another hub process than the one that issued its challenge, so the challenge
*is* a sealed token: what the proof step needs travels inside it, tagged with keyed BLAKE2b-256 (RFC 7693)
under a key all hub processes share. Only hub processes check the tag, so it need not be HMAC; keyed
BLAKE2b is the cheaper of the two (docs/design.md). Unanswered challenges cost the hub no memory. A proof
*claims* its nonce in the replay guard (:class:`MemoryReplayGuard` in one process, a shared one in the
service) once, until its token expires. Layout (integers big-endian), signed by the device as received::

    version 1 | expires_ms 8 | nonce 16 | leaf fp 32 | n 1 | path fps n*32 | id_len 2 | device id
              | spki_len 2 | SubjectPublicKeyInfo DER | BLAKE2b-256(key, everything before) 32
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import deque
from typing import NamedTuple, Protocol

from hubsim.errors import AuthError

VERSION = 1
NONCE_BYTES = 16
MAC_BYTES = 32
_HEAD = struct.Struct(">BQ16s32sB")
_LEN = struct.Struct(">H")
MAX_TOKEN_BYTES = 4096


class Token(NamedTuple):
    expires_at: float
    nonce: bytes
    leaf: bytes
    path: tuple[bytes, ...]
    device_id: str
    spki: bytes


def seal(key: bytes, token: Token) -> bytes:
    device_id = token.device_id.encode("utf-8")
    path = token.path
    spki = token.spki
    body = b"%b%b%b%b%b%b" % (
        _HEAD.pack(VERSION, int(token.expires_at * 1000), token.nonce, token.leaf, len(path)),
        b"".join(path),
        _LEN.pack(len(device_id)),
        device_id,
        _LEN.pack(len(spki)),
        spki,
    )
    return body + _mac(key, body)


def _mac(key: bytes, body: bytes) -> bytes:
    return hashlib.blake2b(body, key=key, digest_size=MAC_BYTES).digest()


def open_token(key: bytes, data: bytes) -> Token:
    """Check the MAC and decode; raises ``challenge_invalid`` for anything this hub did not issue."""
    if not MAC_BYTES + _HEAD.size <= len(data) <= MAX_TOKEN_BYTES:
        raise AuthError("challenge_invalid", "challenge has the wrong length")
    body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    if not hmac.compare_digest(_mac(key, body), mac):
        raise AuthError("challenge_invalid")
    # From here on the bytes are our own, so the layout is trusted.
    version, expires_ms, nonce, leaf, count = _HEAD.unpack_from(body)
    if version != VERSION:
        raise AuthError("challenge_invalid", "unknown challenge version")
    pos = _HEAD.size
    path = tuple(body[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))
    pos += 32 * count
    (id_len,) = _LEN.unpack_from(body, pos)
    device_id = body[pos + 2 : pos + 2 + id_len].decode("utf-8")
    pos += 2 + id_len
    (spki_len,) = _LEN.unpack_from(body, pos)
    spki = body[pos + 2 : pos + 2 + spki_len]
    return Token(expires_ms / 1000.0, nonce, leaf, path, device_id, spki)


class ReplayGuard(Protocol):
    def claim(self, nonce: bytes, expires_at: float, now: float) -> bool:
        """Record ``nonce`` as used until ``expires_at``; False if it was already claimed."""


class MemoryReplayGuard:
    """A single-process replay guard; entries leave once their token could no longer be accepted."""

    def __init__(self, max_entries: int = 2_000_000):
        self._used: set[bytes] = set()
        self._order: deque[tuple[float, bytes]] = deque()
        self.max_entries = max_entries

    def claim(self, nonce: bytes, expires_at: float, now: float) -> bool:
        order, used = self._order, self._used
        while order and order[0][0] < now:
            used.discard(order.popleft()[1])
        if nonce in used:
            return False
        if len(used) >= self.max_entries:
            # Fail closed: refusing a proof is safe, forgetting a used nonce is not.
            raise AuthError("throttled", "too many proofs in flight; retry shortly")
        used.add(nonce)
        order.append((expires_at, nonce))
        return True

    def __len__(self) -> int:
        return len(self._used)


__all__ = [
    "MAC_BYTES",
    "MAX_TOKEN_BYTES",
    "NONCE_BYTES",
    "VERSION",
    "MemoryReplayGuard",
    "ReplayGuard",
    "Token",
    "open_token",
    "seal",
]
