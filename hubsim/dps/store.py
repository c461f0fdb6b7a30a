"""DPS's SQLite store: the hub's store (CAs, revocations, the change log, the audit log) plus linked hubs,
enrollment groups, registrations and the devices per hub.

Management changes (hubs, groups) go through the hub store's durable write: committed with
``synchronous=FULL`` together with a change-log row (other workers follow it) and an audit entry, before
the answer. A registration is committed with ``synchronous=FULL`` on the same connection, together with
the count of devices per hub, *after* the assigned hub recorded the device and *before* the device is
told: an acknowledged assignment survives kill -9 and the hub holds it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3

from hubsim.service import store as hubstore
from hubsim.service.store import AuditEntry, Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS linked_hubs (
    name TEXT PRIMARY KEY,          -- the host devices connect to (assignedHub)
    url TEXT NOT NULL,              -- its management API
    token TEXT,                     -- its management token (never shown)
    linked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollment_groups (
    id TEXT PRIMARY KEY,
    ca TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,              -- JSON: allocation, hubs, reprovision, enabled
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    id TEXT PRIMARY KEY,            -- registration id = device id = certificate CN
    grp TEXT NOT NULL,
    hub TEXT NOT NULL,
    thumbprint TEXT NOT NULL,       -- SHA-256 of the device certificate that registered last
    ca TEXT NOT NULL,
    operation TEXT NOT NULL,        -- the operation that assigned it last
    substatus TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    etag INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS registrations_by_operation ON registrations (operation);
CREATE TABLE IF NOT EXISTS hub_load (hub TEXT PRIMARY KEY, devices INTEGER NOT NULL) WITHOUT ROWID;
"""
SCHEMA_VERSION = "dps-1"
ID_SCOPE_KEY = "dps_id_scope"


def initialise(path: str, id_scope: str | None = None) -> str:
    """The hub's schema, DPS's tables and the id scope (made on first start unless given); returns it."""
    hubstore.initialise(path)
    con = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA)
        con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('dps_schema', ?)", (SCHEMA_VERSION,))
        row = con.execute("SELECT value FROM meta WHERE key = ?", (ID_SCOPE_KEY,)).fetchone()
        if row is None or (id_scope is not None and row[0] != id_scope):
            scope = id_scope or "0ne" + secrets.token_hex(4).upper()
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (ID_SCOPE_KEY, scope))
            return scope
        return row[0]
    finally:
        con.close()


class DpsStore(Store):
    """One DPS worker's handle on the database."""

    # -- configuration: linked hubs and enrollment groups -------------------------------------------------
    def id_scope(self) -> str:
        return self.admin.execute("SELECT value FROM meta WHERE key = ?", (ID_SCOPE_KEY,)).fetchone()[0]

    def put_hub(self, name: str, url: str, token: str | None, now: float, actor) -> None:
        self._write(
            [
                (
                    "INSERT INTO linked_hubs (name, url, token, linked_at) VALUES (?, ?, ?, ?) ON CONFLICT(name)"
                    " DO UPDATE SET url = excluded.url, token = excluded.token, linked_at = excluded.linked_at",
                    (name, url, token, now),
                )
            ],
            ("hub", name),
            now,
            AuditEntry(actor, "hub.link", name, (), {"url": url}),
            always_acknowledged=True,
        )

    def delete_hub(self, name: str, now: float, actor) -> bool:
        (count,) = self._write(
            [("DELETE FROM linked_hubs WHERE name = ?", (name,))],
            ("hub", name),
            now,
            AuditEntry(actor, "hub.unlink", name, (), {}),
        )
        return count == 1

    def hub_row(self, name: str) -> tuple | None:
        """(name, url, token) of a linked hub."""
        return self.admin.execute("SELECT name, url, token FROM linked_hubs WHERE name = ?", (name,)).fetchone()

    def hub_rows(self) -> list[tuple]:
        return self.admin.execute("SELECT name, url, token FROM linked_hubs ORDER BY name").fetchall()

    def put_group(self, group, now: float, actor) -> bool:
        """False when another group already uses the CA (the UNIQUE constraint, across workers)."""
        doc = json.dumps(group.to_json(), sort_keys=True)
        try:
            self._write(
                [
                    (
                        "INSERT INTO enrollment_groups (id, ca, doc, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(id)"
                        " DO UPDATE SET ca = excluded.ca, doc = excluded.doc, updated_at = excluded.updated_at",
                        (group.id, group.ca, doc, now),
                    )
                ],
                ("group", group.id),
                now,
                AuditEntry(actor, "group.put", group.id, (group.ca,), group.to_json()),
                always_acknowledged=True,
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def delete_group(self, group_id: str, now: float, actor) -> bool:
        (count,) = self._write(
            [("DELETE FROM enrollment_groups WHERE id = ?", (group_id,))],
            ("group", group_id),
            now,
            AuditEntry(actor, "group.delete", group_id, (), {}),
        )
        return count == 1

    def group_doc(self, group_id: str) -> dict | None:
        row = self.admin.execute("SELECT doc FROM enrollment_groups WHERE id = ?", (group_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def group_docs(self) -> list[dict]:
        return [json.loads(r[0]) for r in self.admin.execute("SELECT doc FROM enrollment_groups ORDER BY id")]

    # -- registrations -------------------------------------------------------------------------------------
    _COLUMNS = "id, grp, hub, thumbprint, ca, operation, substatus, created_at, updated_at, etag"

    @staticmethod
    def _registration(row) -> dict | None:
        if row is None:
            return None
        keys = ("id", "group", "hub", "thumbprint", "ca", "operation", "substatus", "created_at", "updated_at")
        return {**dict(zip(keys, row)), "etag": row[9]}

    def registration(self, registration_id: str) -> dict | None:
        row = self.admin.execute(f"SELECT {self._COLUMNS} FROM registrations WHERE id = ?", (registration_id,))
        return self._registration(row.fetchone())

    def registration_by_operation(self, operation: str) -> dict | None:
        row = self.admin.execute(f"SELECT {self._COLUMNS} FROM registrations WHERE operation = ?", (operation,))
        return self._registration(row.fetchone())

    def hub_loads(self) -> dict[str, int]:
        return dict(self.admin.execute("SELECT hub, devices FROM hub_load").fetchall())

    def commit_registration(
        self, registration_id: str, group: str, hub: str, thumbprint: str, ca: str, operation: str, substatus: str, now
    ) -> dict:
        """Record an assignment durably (``synchronous=FULL``) with the devices per hub; the row as stored."""

        def run():
            con = self.admin
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT hub, created_at, etag FROM registrations WHERE id = ?", (registration_id,))
                previous = row.fetchone()
                created = previous[1] if previous else now
                etag = previous[2] + 1 if previous else 1
                stored = (registration_id, group, hub, thumbprint, ca, operation, substatus, created, now, etag)
                con.execute(
                    f"INSERT OR REPLACE INTO registrations ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    stored,
                )
                if previous is None or previous[0] != hub:
                    con.execute(
                        "INSERT INTO hub_load (hub, devices) VALUES (?, 1)"
                        " ON CONFLICT(hub) DO UPDATE SET devices = devices + 1",
                        (hub,),
                    )
                    if previous is not None:
                        con.execute("UPDATE hub_load SET devices = devices - 1 WHERE hub = ?", (previous[0],))
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return stored

        return self._registration(hubstore.retry_locked(run))


__all__ = ["ID_SCOPE_KEY", "SCHEMA", "SCHEMA_VERSION", "DpsStore", "initialise"]
