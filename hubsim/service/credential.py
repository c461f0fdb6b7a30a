"""The management plane's credential: the operator's bearer token, and the gate every management call
passes (docs/api.md#management-credential).

Devices authenticate with certificates; whoever changes or reads the hub's trust configuration presents
``Authorization: Bearer <token>``. The token (``secrets.token_urlsafe(32)``, 256 random bits) is made on
first start in ``<db>.admin-token`` (mode 0600) or read from ``--admin-token-file``; a file group or
others may read or write is refused, as ssh refuses such a key. Workers hold only its SHA-256 and compare
it with the SHA-256 of what a caller presents in constant time; the token is never logged or echoed (the
audit log names it by a prefix of that hash). ``--management``: ``token`` (default), ``open`` (loopback
addresses only) or ``off``. Refusals are 401 with ``WWW-Authenticate: Bearer`` (RFC 6750), counted in
``/metrics``; an address that keeps presenting bad credentials is slowed down (:mod:`.lockout`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from typing import NamedTuple

from hubsim.errors import AuthError
from hubsim.service.quota import retry_after_header

MODES = ("token", "open", "off")
TOKEN_SUFFIX = ".admin-token"
TOKEN_CHARS = (32, 512)
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_REALM = 'Bearer realm="certstorm-hub"'
# error code -> WWW-Authenticate value (RFC 6750 section 3)
CHALLENGES = {
    "admin_token_missing": _REALM,
    "admin_token_malformed": _REALM + ', error="invalid_request"',
    "admin_token_invalid": _REALM + ', error="invalid_token"',
}


class ConfigError(ValueError):
    """An option the hub cannot start with; the message names it."""


@dataclass(frozen=True)
class ManagementAccess:
    """What a worker needs to judge management calls: never the token itself."""

    mode: str = "token"
    digest: bytes | None = None  # SHA-256 of the token
    token_id: str | None = None
    path: str | None = None  # where the token is (for the start-up message)


class Operator(NamedTuple):
    """Who made a management call, as the audit log records it."""

    peer: str
    token_id: str | None


class Refusal(NamedTuple):
    error: AuthError
    headers: dict


def token_id(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return False
    addresses = {info[4][0].split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _checked_token(text: str, where: str) -> str:
    token = text.strip()
    low, high = TOKEN_CHARS
    if not (low <= len(token) <= high and _TOKEN68.fullmatch(token)):
        raise ConfigError(
            f"{where}: the token must be {low} to {high} characters of A-Z a-z 0-9 - . _ ~ + / (optionally ending in =)"
        )
    return token


def read_token_file(path: str, where: str) -> str:
    """The token in ``path``, refused when others may read or change the file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}: not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{where}: readable or writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"chmod 600 {path}"
        )
    with open(path, encoding="ascii", errors="replace") as fh:
        return _checked_token(fh.read(TOKEN_CHARS[1] + 2), where)


def create_token_file(path: str) -> str:
    """A new random token in a new file only its owner can read (never overwrites one)."""
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return token


def resolve_access(mode: str, token_file: str | None, db: str, host: str) -> tuple[ManagementAccess, bool]:
    """The hub's management access, and whether a token was generated just now. Raises ValueError with a
    message naming the option at fault (ConfigError)."""
    if mode not in MODES:
        raise ConfigError(f"--management must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "token":
        if token_file:
            raise ConfigError(f"--admin-token-file needs --management token, not {mode}")
        if mode == "open" and not is_loopback(host):
            raise ConfigError(
                f"--management open would let anyone who reaches {host} change the hub's trust "
                "configuration; it is allowed on loopback addresses only. Drop it (a token is then "
                "made beside the database), give --admin-token-file, or use --management off"
            )
        return ManagementAccess(mode), False
    created = False
    if token_file:
        path = os.path.abspath(token_file)
        token = read_token_file(path, f"--admin-token-file {token_file}")
    else:
        path = db + TOKEN_SUFFIX
        try:
            token, created = create_token_file(path), True
        except FileExistsError:
            token = read_token_file(path, f"{path} (the hub's management token; delete it to make a new one)")
    return ManagementAccess("token", hashlib.sha256(token.encode()).digest(), token_id(token), path), created


class AdminGate:
    """Judges one worker's management calls. ``lockout`` is the shared failure table (None: no slow-down)."""

    def __init__(self, access: ManagementAccess, lockout=None):
        self.access = access
        self.lockout = lockout

    def check(self, authorization: list[str], peer: str | None) -> Operator | Refusal:
        """``authorization``: every Authorization header value of the request."""
        who = peer or "unknown"
        access = self.access
        if access.mode == "open":
            return Operator(who, None)
        if access.mode == "off":
            return Refusal(AuthError("management_disabled"), {})
        lockout = self.lockout
        if lockout is not None:
            wait = lockout.wait(peer)
            if wait:
                return Refusal(AuthError("admin_locked_out"), {"Retry-After": retry_after_header(wait)})
        if not authorization:
            return self._refuse("admin_token_missing", None)
        scheme, _, token = authorization[0].strip().partition(" ")
        token = token.strip()
        if (
            len(authorization) > 1
            or scheme.lower() != "bearer"
            or not _TOKEN68.fullmatch(token)
            or len(token) > TOKEN_CHARS[1]
        ):
            return self._refuse("admin_token_malformed", who)
        if not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), access.digest):
            return self._refuse("admin_token_invalid", who)
        return Operator(who, access.token_id)

    def _refuse(self, code: str, peer: str | None) -> Refusal:
        """A 401. A call that presented a credential counts against its address (one that presented
        none guessed nothing, so ``peer`` is None for it)."""
        if peer is not None and self.lockout is not None:
            self.lockout.fail(peer)
        return Refusal(AuthError(code), {"WWW-Authenticate": CHALLENGES[code]})


__all__ = [
    "CHALLENGES",
    "MODES",
    "TOKEN_CHARS",
    "TOKEN_SUFFIX",
    "AdminGate",
    "ConfigError",
    "ManagementAccess",
    "Operator",
    "Refusal",
    "create_token_file",
    "is_loopback",
    "read_token_file",
    "resolve_access",
    "token_id",
]
