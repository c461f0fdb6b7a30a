"""The hub's SQLite store: CAs, revocations, the device registry, and the change log workers follow.

One WAL database, opened by every worker process with two connections:

* ``admin`` (``synchronous=FULL``): CA, revocation and disable changes are committed and fsynced before
  the HTTP response goes out, each with a ``changes`` row and an ``audit`` row (append-only: triggers
  refuse UPDATE and DELETE) in the same transaction, so after any crash the audit log holds exactly the
  committed changes, each with who made it. The device path never touches it.
* ``hot`` (``synchronous=NORMAL``: durable across process crashes, not an operating-system crash until
  the next fsync): a device's first authentication at once, the batched registry updates behind it.

Workers never checkpoint the WAL (``wal_autocheckpoint=0``): an automatic checkpoint would run, and
fsync, inside whichever device admission crosses the threshold (docs/design.md). The supervisor
checkpoints every second instead (:func:`checkpoint`). Workers poll ``changes`` a few times a second
(:meth:`Store.changes_since`), so a change made through one worker is enforced by all of them.

:class:`SqlRegistry`: ``first_connection`` is exact across workers and restarts -- a device's first
admission runs ``INSERT ... ON CONFLICT DO UPDATE ... WHERE first_seen IS NULL``, which changes a row for
exactly one writer -- and costs that statement once per device per worker (a bounded set remembers the
rest). ``last_authenticated``, ``authentications`` and the admitting ``ca`` are written behind, batched
and flushed every poll interval and on a clean stop.
"""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from hubsim.engine import DisabledDevices

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cas (
    id TEXT PRIMARY KEY,            -- SHA-256 of the DER, lower-case hex
    der BLOB NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,           -- unverified | verified
    registered_at REAL NOT NULL,
    verification_code TEXT,
    code_expires_at REAL,
    verified_at REAL
);
CREATE TABLE IF NOT EXISTS revocations (fingerprint TEXT PRIMARY KEY, revoked_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    first_seen REAL,                -- NULL for a device disabled before it ever authenticated
    last_auth REAL,
    ca TEXT,
    auths INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,             -- ca | revocation | device
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    peer TEXT NOT NULL,             -- the caller's address
    token_id TEXT,                  -- the credential's id (NULL under --management open)
    action TEXT NOT NULL,           -- ca.register|verify|new_code|remove, revocation.add, device.disable|enable
    target TEXT NOT NULL,           -- CA id, certificate fingerprint or device id
    fingerprints TEXT NOT NULL,     -- JSON list: SHA-256 (hex) of every certificate involved
    detail TEXT NOT NULL            -- JSON object
);
CREATE TABLE IF NOT EXISTS identities (
    id TEXT PRIMARY KEY,            -- device id
    thumbprint TEXT,                -- SHA-256 of the device certificate's DER, hex, as the provisioner saw it
    ca TEXT,                        -- the CA that attested the device at the provisioner
    source TEXT NOT NULL,           -- who wrote it (a DPS's name), from the caller's JSON
    detail TEXT NOT NULL,           -- JSON object: enrollment group, operation id
    provisioned_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
SCHEMA_VERSION = "3"
# version -> the version it becomes by running SCHEMA (2 added the audit log, 3 the provisioned identities)
UPGRADES = {"1": "3", "2": "3"}
BUSY_WAIT_LIMIT = 10.0  # seconds a hot-path write waits for the write lock before giving up
CHANGE_LOG_KEEP = 300.0  # seconds of change log kept; workers read it every fraction of a second
WAL_TRUNCATE_BYTES = 32 << 20


def _connect(path: str, synchronous: str, timeout: float, autocheckpoint: bool = True) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("PRAGMA foreign_keys=OFF")
    if not autocheckpoint:
        con.execute("PRAGMA wal_autocheckpoint=0")
    return con


def checkpoint(path: str, *, truncate_over: int = WAL_TRUNCATE_BYTES) -> None:
    """Copy the WAL into the database. The supervisor calls this every second, so that no worker ever
    runs a checkpoint -- and its fsync -- inside a request.

    A PASSIVE checkpoint never blocks anyone, but under steady load SQLite rarely finds the moment with
    no reader in the WAL that it needs to start the log over, so the WAL file only grows, with every new
    device (docs/design.md). Past ``truncate_over`` bytes the checkpoint is a TRUNCATE instead: it waits (at
    most half a second) for readers to move on, holding off writers for that long, and empties the file.
    """
    con = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        try:
            size = os.path.getsize(path + "-wal")
        except OSError:
            size = 0
        mode = "TRUNCATE" if size > truncate_over else "PASSIVE"
        con.execute(f"PRAGMA wal_checkpoint({mode})")
    finally:
        con.close()


def initialise(path: str) -> None:
    """Create the database and its schema if missing; called once by the supervisor before workers start."""
    con = _connect(path, "FULL", 30.0)
    try:
        con.executescript(SCHEMA)
        row = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif UPGRADES.get(row[0]) == SCHEMA_VERSION:
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: schema version {row[0]}, this hub needs {SCHEMA_VERSION}")
        # No worker runs yet, so nobody needs the old change log: every worker loads the full state.
        con.execute("DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes)")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _retry_locked(fn: Callable, *args):
    """Run a write, retrying briefly while another process holds the write lock.

    SQLite's own busy handler sleeps at least a millisecond per retry; the hot path's transactions
    hold the lock for microseconds, so poll faster than that (with a bound, then fail loudly)."""
    delay, waited = 0.0001, 0.0
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if waited >= BUSY_WAIT_LIMIT:
                raise
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.01)


retry_locked = _retry_locked  # public name for services of the same family


class AuditEntry(NamedTuple):
    """One acknowledged management change; ``actor`` is who made it (peer address, token id)."""

    actor: tuple[str, str | None]
    action: str
    target: str
    fingerprints: tuple[str, ...]
    detail: dict

    def row(self, now: float) -> tuple:
        peer, token = self.actor
        return (
            now,
            peer,
            token,
            self.action,
            self.target,
            json.dumps(list(self.fingerprints)),
            json.dumps(self.detail, sort_keys=True),
        )


class Store:
    """One worker's (or the supervisor's) handle on the database."""

    def __init__(self, path: str):
        self.path = path
        self.admin = _connect(path, "FULL", 30.0, autocheckpoint=False)
        self.hot = _connect(path, "NORMAL", 0.0, autocheckpoint=False)

    def close(self) -> None:
        self.admin.close()
        self.hot.close()

    # -- reading the whole state (worker start) ---------------------------------------------------------
    def snapshot(self) -> tuple[int, list[tuple], list[str], list[str]]:
        """(last change seq, CA rows, revoked fingerprints, disabled device ids), read consistently."""
        con = self.admin
        con.execute("BEGIN")
        try:
            seq = con.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
            cas = con.execute(
                "SELECT id, der, status, registered_at, verification_code, code_expires_at, verified_at FROM cas"
            ).fetchall()
            revoked = [r[0] for r in con.execute("SELECT fingerprint FROM revocations")]
            disabled = [r[0] for r in con.execute("SELECT id FROM devices WHERE disabled = 1")]
        finally:
            con.execute("COMMIT")
        return seq, cas, revoked, disabled

    def changes_since(self, seq: int) -> list[tuple[int, str, str]]:
        return self.admin.execute("SELECT seq, kind, key FROM changes WHERE seq > ? ORDER BY seq", (seq,)).fetchall()

    def trim_changes(self, now: float) -> None:
        _retry_locked(
            self.admin.execute,
            "DELETE FROM changes WHERE at < ? AND seq < (SELECT max(seq) FROM changes)",
            (now - CHANGE_LOG_KEEP,),
        )

    # -- CAs ---------------------------------------------------------------------------------------------
    def ca_row(self, ca_id: str) -> tuple | None:
        return self.admin.execute(
            "SELECT id, der, status, registered_at, verification_code, code_expires_at, verified_at"
            " FROM cas WHERE id = ?",
            (ca_id,),
        ).fetchone()

    def _write(
        self,
        statements: Iterable[tuple[str, tuple]],
        change: tuple[str, str],
        now: float,
        audit: AuditEntry,
        *,
        always_acknowledged: bool = False,
    ) -> list[int]:
        """Run ``statements``, log ``change`` for the other workers and ``audit`` in the audit log, in one
        durable transaction; returns each rowcount. A first statement that changed no row means the call
        is refused (another worker got there first), so it is not audited -- unless the call is
        ``always_acknowledged`` (a repeated revocation or disable)."""
        con = self.admin
        con.execute("BEGIN IMMEDIATE")
        try:
            counts = [con.execute(sql, params).rowcount for sql, params in statements]
            con.execute("INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)", (*change, now))
            if always_acknowledged or counts[0] == 1:
                con.execute(
                    "INSERT INTO audit (at, peer, token_id, action, target, fingerprints, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    audit.row(now),
                )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return counts

    def insert_ca(self, record, now: float, actor) -> bool:
        """False when another worker registered the same CA first."""
        try:
            self._write(
                [
                    (
                        "INSERT INTO cas (id, der, subject, status, registered_at, verification_code,"
                        " code_expires_at, verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            record.id,
                            record.der,
                            record.subject,
                            record.status,
                            record.registered_at,
                            record.verification_code,
                            record.code_expires_at,
                            record.verified_at,
                        ),
                    )
                ],
                ("ca", record.id),
                now,
                AuditEntry(actor, "ca.register", record.id, (record.id,), {"subject": record.subject}),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def update_ca_code(self, record, now: float, actor) -> bool:
        (count,) = self._write(
            [
                (
                    "UPDATE cas SET verification_code = ?, code_expires_at = ? WHERE id = ? AND status = 'unverified'",
                    (record.verification_code, record.code_expires_at, record.id),
                )
            ],
            ("ca", record.id),
            now,
            AuditEntry(actor, "ca.new_code", record.id, (record.id,), {}),
        )
        return count == 1

    def mark_ca_verified(self, record, used_code: str, now: float, actor, proof: str | None) -> bool:
        """False when the CA changed under us (removed, verified or given a new code by another worker).
        ``proof``: the fingerprint of the verification certificate (None for a raw signature)."""
        (count,) = self._write(
            [
                (
                    "UPDATE cas SET status = 'verified', verified_at = ?, verification_code = NULL,"
                    " code_expires_at = NULL WHERE id = ? AND status = 'unverified' AND verification_code = ?",
                    (record.verified_at, record.id, used_code),
                )
            ],
            ("ca", record.id),
            now,
            AuditEntry(
                actor,
                "ca.verify",
                record.id,
                (record.id, proof) if proof else (record.id,),
                {"proof": "certificate" if proof else "signature"},
            ),
        )
        return count == 1

    def delete_ca(self, ca_id: str, now: float, actor) -> bool:
        (count,) = self._write(
            [("DELETE FROM cas WHERE id = ?", (ca_id,))],
            ("ca", ca_id),
            now,
            AuditEntry(actor, "ca.remove", ca_id, (ca_id,), {}),
        )
        return count == 1

    # -- revocations -------------------------------------------------------------------------------------
    def insert_revocation(self, fingerprint_hex: str, now: float, actor) -> float:
        """Record the revocation; returns when it was first revoked (an earlier time if it already was)."""
        self._write(
            [
                (
                    "INSERT OR IGNORE INTO revocations (fingerprint, revoked_at) VALUES (?, ?)",
                    (fingerprint_hex, now),
                )
            ],
            ("revocation", fingerprint_hex),
            now,
            AuditEntry(actor, "revocation.add", fingerprint_hex, (fingerprint_hex,), {}),
            always_acknowledged=True,
        )
        return self.admin.execute(
            "SELECT revoked_at FROM revocations WHERE fingerprint = ?", (fingerprint_hex,)
        ).fetchone()[0]

    def revocations(self) -> list[tuple[str, float]]:
        return self.admin.execute("SELECT fingerprint, revoked_at FROM revocations ORDER BY revoked_at").fetchall()

    # -- the audit log -----------------------------------------------------------------------------------
    def audit(self, after: int = 0, limit: int = 1000) -> list[dict]:
        """Audit entries with ``seq`` above ``after``, oldest first."""
        rows = self.admin.execute(
            "SELECT seq, at, peer, token_id, action, target, fingerprints, detail FROM audit WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [
            {
                "seq": seq,
                "at": at,
                "peer": peer,
                "token_id": token,
                "action": action,
                "target": target,
                "fingerprints": json.loads(fps),
                "detail": json.loads(detail),
            }
            for seq, at, peer, token, action, target, fps, detail in rows
        ]

    # -- devices -----------------------------------------------------------------------------------------
    def set_disabled(self, device_id: str, disabled: bool, now: float, actor) -> None:
        self._write(
            [
                (
                    "INSERT INTO devices (id, disabled, disabled_at) VALUES (?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET disabled = excluded.disabled, disabled_at = excluded.disabled_at",
                    (device_id, 1 if disabled else 0, now if disabled else None),
                )
            ],
            ("device", device_id),
            now,
            AuditEntry(actor, "device.disable" if disabled else "device.enable", device_id, (), {}),
            always_acknowledged=True,
        )

    def provision(self, device_id: str, identity: dict, now: float, actor) -> None:
        """Record a device identity a provisioning service assigned to this hub (idempotent: the latest
        write wins), committed durably before the caller is answered."""
        self._write(
            [
                (
                    "INSERT INTO identities (id, thumbprint, ca, source, detail, provisioned_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET thumbprint = excluded.thumbprint,"
                    " ca = excluded.ca, source = excluded.source, detail = excluded.detail,"
                    " provisioned_at = excluded.provisioned_at",
                    (
                        device_id,
                        identity.get("thumbprint"),
                        identity.get("ca"),
                        identity["source"],
                        json.dumps(identity.get("detail", {}), sort_keys=True),
                        now,
                    ),
                )
            ],
            ("identity", device_id),
            now,
            AuditEntry(
                actor,
                "device.provision",
                device_id,
                tuple(fp for fp in (identity.get("thumbprint"), identity.get("ca")) if fp),
                {"source": identity["source"], **identity.get("detail", {})},
            ),
            always_acknowledged=True,
        )

    def thumbprint(self, device_id: str) -> bytes | None:
        """The provisioned device certificate's SHA-256 (b"" when recorded without one), None when no
        provisioning service recorded the device (hot path: the hot connection, no transaction)."""
        row = self.hot.execute("SELECT thumbprint FROM identities WHERE id = ?", (device_id,)).fetchone()
        if row is None:
            return None
        return bytes.fromhex(row[0]) if row[0] else b""

    def identity(self, device_id: str) -> dict | None:
        row = self.admin.execute(
            "SELECT thumbprint, ca, source, detail, provisioned_at FROM identities WHERE id = ?", (device_id,)
        ).fetchone()
        if row is None:
            return None
        return {
            "thumbprint": row[0],
            "ca": row[1],
            "source": row[2],
            "detail": json.loads(row[3]),
            "provisioned_at": row[4],
        }

    def is_disabled(self, device_id: str) -> bool:
        row = self.admin.execute("SELECT disabled FROM devices WHERE id = ?", (device_id,)).fetchone()
        return bool(row and row[0])

    def device(self, device_id: str) -> dict | None:
        row = self.admin.execute(
            "SELECT id, first_seen, last_auth, ca, auths, disabled, disabled_at FROM devices WHERE id = ?",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "device_id": row[0],
            "first_seen": row[1],
            "last_authenticated": row[2],
            "ca": row[3],
            "authentications": row[4],
            "disabled": bool(row[5]),
            "disabled_at": row[6],
        }

    def first_admission(self, device_id: str, ca: str, now: float) -> bool:
        """Record a device's authentication with its first-seen time; True if no one recorded it before."""
        cur = _retry_locked(
            self.hot.execute,
            "INSERT INTO devices (id, first_seen, last_auth, ca, auths) VALUES (?, ?, ?, ?, 1)"
            " ON CONFLICT(id) DO UPDATE SET first_seen = excluded.first_seen, last_auth = excluded.last_auth,"
            " ca = excluded.ca, auths = auths + 1 WHERE first_seen IS NULL",
            (device_id, now, now, ca),
        )
        return cur.rowcount == 1

    def record_authentications(self, rows: list[tuple[str, float, str, int]]) -> None:
        """Write-behind: (device id, last authentication, ca, count) upserts, in one short transaction."""

        def run():
            con = self.hot
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany(
                    "INSERT INTO devices (id, first_seen, last_auth, ca, auths) VALUES (?1, ?2, ?2, ?3, ?4)"
                    " ON CONFLICT(id) DO UPDATE SET last_auth = max(coalesce(last_auth, 0), excluded.last_auth),"
                    " ca = excluded.ca, auths = auths + excluded.auths,"
                    " first_seen = coalesce(first_seen, excluded.first_seen)",
                    rows,
                )
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

        _retry_locked(run)


class SqlRegistry(DisabledDevices):
    """The engine's device registry for one worker: see the module docstring for what it promises."""

    def __init__(self, store: Store, *, known_limit: int = 1 << 18):
        super().__init__()
        self.store = store
        self._known: dict[str, None] = {}  # devices this worker knows are recorded (insertion-ordered)
        self._known_limit = known_limit
        self._pending: dict[str, list] = {}  # id -> [last_auth, ca, count]
        self._pending_since: float | None = None
        self._provisioned: dict[str, bytes] = {}  # id -> recorded thumbprint (b"": none), bounded like _known

    # the engine's protocol
    def admit(self, device_id: str, ca: str, now: float) -> bool:
        known = self._known
        if device_id in known:
            row = self._pending.get(device_id)
            if row is None:
                self._pending[device_id] = [now, ca, 1]
                if self._pending_since is None:
                    self._pending_since = now
            else:
                row[0] = now
                row[1] = ca
                row[2] += 1
            return False
        first = self.store.first_admission(device_id, ca, now)
        if not first:  # recorded before (by another worker, or before a restart): count this one too
            self._pending[device_id] = [now, ca, 1]
            if self._pending_since is None:
                self._pending_since = now
        if len(known) >= self._known_limit:
            del known[next(iter(known))]
        known[device_id] = None
        return first

    def get(self, device_id: str) -> dict | None:
        self.flush()
        return self.store.device(device_id)

    def provisioned(self, device_id: str, leaf: bytes) -> bool:
        """Whether the identities table holds the device with this certificate (or with none recorded).
        A recorded identity is remembered until the change log says it changed (:meth:`forget_identity`);
        a device not recorded is read again each time."""
        recorded = self._provisioned.get(device_id)
        if recorded is None:
            recorded = self.store.thumbprint(device_id)
            if recorded is None:
                return False
            cache = self._provisioned
            if len(cache) >= self._known_limit:
                del cache[next(iter(cache))]
            cache[device_id] = recorded
        return not recorded or hmac.compare_digest(recorded, leaf)

    def forget_identity(self, device_id: str) -> None:
        """A provisioning service wrote this device's identity again: read it at its next admission."""
        self._provisioned.pop(device_id, None)

    # write-behind
    @property
    def pending(self) -> int:
        return len(self._pending)

    def lag(self, now: float) -> float:
        return 0.0 if self._pending_since is None else max(0.0, now - self._pending_since)

    def flush(self) -> int:
        pending = self._pending
        if not pending:
            return 0
        rows = [(device_id, row[0], row[1], row[2]) for device_id, row in pending.items()]
        self._pending = {}
        self._pending_since = None
        start = 0
        try:
            while start < len(rows):  # short transactions: other workers wait on this lock
                self.store.record_authentications(rows[start : start + 500])
                start += 500
        except BaseException:
            # Keep what was not written, to try again at the next flush.
            for device_id, last, ca, count in rows[start:]:
                row = self._pending.setdefault(device_id, [last, ca, 0])
                row[2] += count
            self._pending_since = self._pending_since or time.time()
            raise
        return len(rows)


__all__ = [
    "BUSY_WAIT_LIMIT",
    "CHANGE_LOG_KEEP",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UPGRADES",
    "WAL_TRUNCATE_BYTES",
    "AuditEntry",
    "SqlRegistry",
    "Store",
    "checkpoint",
    "initialise",
    "retry_locked",
]
