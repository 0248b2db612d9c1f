"""The sandbox's state: one SQLite file, `DIR/sandbox.db`, for one emulated factory.

It holds what the real backend keeps: the factory, its API token and its OAuth application
credential, the certs the user uploaded, the private keys the backend generated (gateway TLS,
online CA, EST), the disabled and revoked device CA serials, the devices (registered, pre-
registered or deny-listed), the OAuth tokens and device authorizations it issued (as SHA-256
hashes only: a copy of the db does not hold a usable access token), and injected faults.

The db file holds private keys and the token, so it is created 0600 (SQLite gives its WAL and
shm files the same mode). Writes and transactions go through one connection shared by every
thread behind a re-entrant lock. A read outside a transaction goes through a connection of
the reading thread's own: WAL readers wait neither for each other nor for the writer, so a
gateway's loop (a device lookup on every request) does not queue behind its commit thread. WAL mode
also lets a second process (the CLI's `devices` command) read while the server runs.
`synchronous=FULL`: a commit is on the disk (the WAL fsync'ed) before it returns, so what the
sandbox answered (a device registered, a certificate accepted) survives a crash of the
machine too. The gateway does not pay one fsync per device: it gathers the writes of a turn of
its loop (`DeviceWrites`) and commits them in one transaction (group commit).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DB_FILE_NAME = "sandbox.db"
SCHEMA_VERSION = 2

# Kinds of keys the backend generates, and what becomes of them.
KEY_KINDS = ("tls", "ca", "est")
KEY_PENDING = "pending"  # CSR handed out, no certificate accepted yet
KEY_ACTIVE = "active"  # its certificate was accepted and is served / used
KEY_RETIRED = "retired"  # replaced by a newer key of the same kind (tls, est)
KEY_REVOKED = "revoked"  # online CA whose certificate was revoked by a CRL

# Columns added after schema 1, for data dirs made by an older sandbox: (table, column, type).
_ADDED_COLUMNS = (
    ("factory", "client_id", "TEXT"),
    ("factory", "client_secret", "TEXT"),
    ("devices", "device_group", "TEXT"),
    ("devices", "pending_pubkey", "TEXT"),
    ("devices", "pending_ca_serial", "TEXT"),
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS factory (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    name       TEXT NOT NULL,
    token      TEXT NOT NULL,
    polis_id   TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    client_id     TEXT,   -- the OAuth application credential (`fioctl login`)
    client_secret TEXT
);
CREATE TABLE IF NOT EXISTS certs (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    root_crt    TEXT,
    ca_crt      TEXT,
    tls_crt     TEXT,
    est_tls_crt TEXT,
    created_by  TEXT,
    created_at  TEXT,
    updated_by  TEXT,
    updated_at  TEXT
);
CREATE TABLE IF NOT EXISTS backend_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL CHECK (kind IN ('tls', 'ca', 'est')),
    state       TEXT NOT NULL,
    key_pem     TEXT NOT NULL,
    csr_pem     TEXT NOT NULL,
    public_key  BLOB NOT NULL,   -- SubjectPublicKeyInfo DER, to match uploaded certs
    cert_pem    TEXT,            -- the accepted certificate, once there is one
    cert_serial TEXT,            -- its serial, base 10
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS disabled_ca_serials (
    serial      TEXT PRIMARY KEY,
    disabled_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_ca_serials (
    serial     TEXT PRIMARY KEY,
    revoked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    uuid        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    pubkey      TEXT NOT NULL,
    is_prod     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    last_seen   TEXT,
    deny_listed INTEGER NOT NULL DEFAULT 0,
    ca_serial   TEXT,
    owner       TEXT,
    device_group TEXT,
    pending_pubkey    TEXT,   -- a key EST certified, accepted beside pubkey until first used
    pending_ca_serial TEXT    -- the device CA that issued its certificate
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    access_hash  TEXT PRIMARY KEY,   -- SHA-256 hex of the access token
    refresh_hash TEXT UNIQUE,        -- of the refresh token; NULL when none was issued
    grant_type   TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    scope        TEXT NOT NULL,
    expires_at   REAL NOT NULL       -- Unix time
);
CREATE TABLE IF NOT EXISTS device_authorizations (
    code_hash  TEXT PRIMARY KEY,     -- SHA-256 hex of the device_code
    user_code  TEXT NOT NULL UNIQUE,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    state      TEXT NOT NULL         -- pending | approved | denied | used
);
CREATE TABLE IF NOT EXISTS faults (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    method    TEXT NOT NULL,   -- HTTP method, or '*'
    route     TEXT NOT NULL,   -- 'certs', 'users-self', ... or '*'
    status    INTEGER NOT NULL,
    message   TEXT NOT NULL,
    remaining INTEGER NOT NULL,
    stall     REAL NOT NULL DEFAULT 0,    -- seconds to hold the answer back
    apply     INTEGER NOT NULL DEFAULT 0  -- 1: apply the request first, then stall (a lost answer)
);
"""


def utc_now() -> str:
    """Now as ISO-8601 UTC with a `Z`, second precision (the API's timestamp style)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class FactoryRecord:
    name: str
    token: str
    polis_id: str
    user_name: str
    gateway_id: str
    created_at: str
    client_id: str | None = None
    client_secret: str | None = None

    def __repr__(self) -> str:  # the token and secret must never end up in a log or traceback
        return f"FactoryRecord(name={self.name!r}, polis_id={self.polis_id!r}, gateway_id={self.gateway_id!r})"


@dataclass(frozen=True)
class CertsRecord:
    root_crt: str | None = None
    ca_crt: str | None = None
    tls_crt: str | None = None
    est_tls_crt: str | None = None
    created_by: str | None = None
    created_at: str | None = None
    updated_by: str | None = None
    updated_at: str | None = None


@dataclass(frozen=True)
class BackendKey:
    id: int
    kind: str
    state: str
    key_pem: str
    csr_pem: str
    public_key: bytes
    cert_pem: str | None
    cert_serial: str | None
    created_at: str
    updated_at: str

    def __repr__(self) -> str:  # keep key_pem out of reprs
        return f"BackendKey(id={self.id}, kind={self.kind!r}, state={self.state!r}, cert_serial={self.cert_serial!r})"


@dataclass(frozen=True)
class DeviceRecord:
    uuid: str
    name: str
    pubkey: str
    is_prod: bool
    created_at: str
    last_seen: str | None
    deny_listed: bool
    ca_serial: str | None
    owner: str | None
    group: str | None = None
    pending_pubkey: str | None = None  # EST re-enrolment: the new key, until the device uses it
    pending_ca_serial: str | None = None


def new_device(*, uuid: str, name: str, pubkey: str, is_prod: bool, ca_serial: str | None, owner: str | None,
               group: str | None, seen: bool) -> DeviceRecord:
    """The record of a device registered now; `seen`: it is connecting now (else pre-registered)."""
    now = utc_now()
    return DeviceRecord(uuid=uuid, name=name, pubkey=pubkey, is_prod=is_prod, created_at=now,
                        last_seen=now if seen else None, deny_listed=False, ca_serial=ca_serial, owner=owner,
                        group=group)


@dataclass
class DeviceWrites:
    """Device writes gathered to be committed together (Store.commit_device_writes). The
    gateway gathers them while the previous group is being committed: a burst of first
    requests shares one transaction and one fsync, and each is answered once it returned."""

    new: dict[str, DeviceRecord] = field(default_factory=dict)  # uuid -> the device to record
    seen: dict[str, str] = field(default_factory=dict)  # uuid -> its new last_seen
    rotated: dict[str, str] = field(default_factory=dict)  # uuid -> the pending key it used (complete_rotation)

    def __bool__(self) -> bool:
        return bool(self.new or self.seen or self.rotated)

    def __contains__(self, uuid: str) -> bool:
        return uuid in self.new or uuid in self.seen or uuid in self.rotated


@dataclass(frozen=True)
class OAuthToken:
    """An issued access token (known by its hash), what it may do and until when."""

    access_hash: str
    grant_type: str
    client_id: str
    scope: str
    expires_at: float


@dataclass(frozen=True)
class DeviceAuthorization:
    """An OAuth device authorization (RFC 8628), known by the hash of its device_code."""

    user_code: str
    client_id: str
    scope: str
    expires_at: float
    state: str


@dataclass(frozen=True)
class Fault:
    method: str
    route: str
    status: int
    message: str
    stall: float = 0.0
    apply: bool = False


def _create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 unless it exists; tighten the mode either way."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


class _Reader:
    """One thread's read connection; closed when the thread (and so its reference) is gone."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self.conn.row_factory = sqlite3.Row

    def __del__(self) -> None:
        self.conn.close()


class Store:
    """All sandbox state. Methods are safe to call from any thread."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / DB_FILE_NAME
        _create_private_file(self.path)
        self._lock = threading.RLock()
        # Autocommit (isolation_level=None): every statement commits unless inside transaction().
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._local = threading.local()  # .reader: this thread's _Reader; .writing: inside transaction()
        self._readers: weakref.WeakSet[_Reader] = weakref.WeakSet()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")  # see the module docstring
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            self._add_missing_columns()
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            self._conn.execute("INSERT OR IGNORE INTO certs (id) VALUES (1)")
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('certs_generation', '0')")

    def _add_missing_columns(self) -> None:
        for table, column, kind in _ADDED_COLUMNS:
            present = {row["name"] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            for reader in list(self._readers):
                reader.conn.close()
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a read-check-write sequence atomically (also against other processes); inside
        another one, it is part of that one."""
        if getattr(self._local, "writing", False):
            yield
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._local.writing = True
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._local.writing = False
            self._conn.execute("COMMIT")

    def _execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def _query(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        """A read: on this thread's own connection, or the transaction's when inside one."""
        if getattr(self._local, "writing", False):
            return self._execute(sql, params)
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = _Reader(self.path)
            with self._lock:
                self._readers.add(reader)
        return reader.conn.execute(sql, params)

    # -- the factory -------------------------------------------------------------------------

    def factory(self) -> FactoryRecord | None:
        row = self._query("SELECT * FROM factory WHERE id = 1").fetchone()
        if row is None:
            return None
        return FactoryRecord(
            name=row["name"],
            token=row["token"],
            polis_id=row["polis_id"],
            user_name=row["user_name"],
            gateway_id=row["gateway_id"],
            created_at=row["created_at"],
            client_id=row["client_id"],
            client_secret=row["client_secret"],
        )

    def create_factory(self, *, name: str, token: str, polis_id: str, user_name: str, gateway_id: str,
                       client_id: str, client_secret: str) -> FactoryRecord:
        self._execute(
            "INSERT INTO factory (id, name, token, polis_id, user_name, gateway_id, created_at, client_id, client_secret)"
            " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, token, polis_id, user_name, gateway_id, utc_now(), client_id, client_secret),
        )
        record = self.factory()
        assert record is not None
        return record

    def set_oauth_client(self, client_id: str, client_secret: str) -> None:
        """Give a factory made by an older sandbox its OAuth application credential."""
        self._execute("UPDATE factory SET client_id = ?, client_secret = ? WHERE id = 1", (client_id, client_secret))

    # -- uploaded certs ----------------------------------------------------------------------

    def certs(self) -> CertsRecord:
        row = self._query("SELECT * FROM certs WHERE id = 1").fetchone()
        return CertsRecord(**{key: row[key] for key in row.keys() if key != "id"})

    def save_certs(self, certs: CertsRecord) -> None:
        with self.transaction():
            self._execute(
                "UPDATE certs SET root_crt = :root_crt, ca_crt = :ca_crt, tls_crt = :tls_crt,"
                " est_tls_crt = :est_tls_crt, created_by = :created_by, created_at = :created_at,"
                " updated_by = :updated_by, updated_at = :updated_at WHERE id = 1",
                certs.__dict__,
            )
            self._execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'certs_generation'")

    @property
    def certs_generation(self) -> int:
        """Bumped by every save_certs, in the same transaction: the gateway (in any of its
        processes) compares it with the one its TLS context was built at, on every connection."""
        row = self._query("SELECT value FROM meta WHERE key = 'certs_generation'").fetchone()
        return int(row["value"])

    # -- keys the backend generated ----------------------------------------------------------

    def add_backend_key(self, *, kind: str, key_pem: str, csr_pem: str, public_key: bytes) -> int:
        if kind not in KEY_KINDS:
            raise ValueError(f"unknown backend key kind {kind!r}")
        now = utc_now()
        cursor = self._execute(
            "INSERT INTO backend_keys (kind, state, key_pem, csr_pem, public_key, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, KEY_PENDING, key_pem, csr_pem, public_key, now, now),
        )
        return int(cursor.lastrowid)

    def backend_keys(self, kind: str, *states: str) -> list[BackendKey]:
        """Keys of one kind, oldest first; only those in `states` when given."""
        sql = "SELECT * FROM backend_keys WHERE kind = ?"
        params: list = [kind]
        if states:
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            params.extend(states)
        rows = self._query(sql + " ORDER BY id", tuple(params)).fetchall()
        return [BackendKey(**{key: row[key] for key in row.keys()}) for row in rows]

    def set_backend_key_state(
        self, key_id: int, state: str, *, cert_pem: str | None = None, cert_serial: str | None = None
    ) -> None:
        """Move a key to `state`; a given certificate replaces the recorded one."""
        self._execute(
            "UPDATE backend_keys SET state = ?, cert_pem = COALESCE(?, cert_pem),"
            " cert_serial = COALESCE(?, cert_serial), updated_at = ? WHERE id = ?",
            (state, cert_pem, cert_serial, utc_now(), key_id),
        )

    # -- device CA serials -------------------------------------------------------------------

    def disabled_ca_serials(self) -> list[str]:
        rows = self._query("SELECT serial FROM disabled_ca_serials ORDER BY disabled_at, serial").fetchall()
        return [row["serial"] for row in rows]

    def disable_ca_serial(self, serial: str) -> None:
        self._execute(
            "INSERT OR IGNORE INTO disabled_ca_serials (serial, disabled_at) VALUES (?, ?)", (serial, utc_now())
        )

    def enable_ca_serial(self, serial: str) -> None:
        self._execute("DELETE FROM disabled_ca_serials WHERE serial = ?", (serial,))

    def revoked_ca_serials(self) -> set[str]:
        return {row["serial"] for row in self._query("SELECT serial FROM revoked_ca_serials").fetchall()}

    def revoke_ca_serial(self, serial: str) -> None:
        """A revoked serial is gone from ca-crt and never disabled any more; it comes back only
        when its CA is uploaded again (unrevoke_ca_serial)."""
        self._execute(
            "INSERT OR IGNORE INTO revoked_ca_serials (serial, revoked_at) VALUES (?, ?)", (serial, utc_now())
        )
        self.enable_ca_serial(serial)

    def unrevoke_ca_serial(self, serial: str) -> None:
        self._execute("DELETE FROM revoked_ca_serials WHERE serial = ?", (serial,))

    # -- devices (used by the gateway and registration) --------------------------------------

    def device(self, uuid: str) -> DeviceRecord | None:
        row = self._query("SELECT * FROM devices WHERE uuid = ?", (uuid,)).fetchone()
        return None if row is None else _device_from_row(row)

    def devices(self, *, include_deny_listed: bool = False) -> list[DeviceRecord]:
        sql = "SELECT * FROM devices"
        if not include_deny_listed:
            sql += " WHERE deny_listed = 0"
        return [_device_from_row(row) for row in self._query(sql + " ORDER BY created_at, uuid").fetchall()]

    def add_device(
        self,
        *,
        uuid: str,
        name: str,
        pubkey: str,
        is_prod: bool = False,
        ca_serial: str | None = None,
        owner: str | None = None,
        group: str | None = None,
        seen: bool = True,
    ) -> DeviceRecord:
        """Record a new device (sqlite3.IntegrityError when the uuid exists, deleted or not).
        `seen=False` for a pre-registered device that has not connected yet."""
        record = new_device(uuid=uuid, name=name, pubkey=pubkey, is_prod=is_prod, ca_serial=ca_serial, owner=owner,
                            group=group, seen=seen)
        if not self.commit_device_writes(DeviceWrites(new={uuid: record})):
            raise sqlite3.IntegrityError(f"device {uuid} exists")
        return record

    def commit_device_writes(self, writes: DeviceWrites) -> set[str]:
        """Record `writes` in one transaction, one fsync for all of them; the uuids of the new
        devices recorded (one whose uuid exists already, deleted or not, is left out: another
        connection or process registered it first)."""
        added = set()
        with self.transaction():
            for record in writes.new.values():
                cursor = self._execute(
                    "INSERT INTO devices (uuid, name, pubkey, is_prod, created_at, last_seen, ca_serial, owner,"
                    " device_group) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO NOTHING",
                    (record.uuid, record.name, record.pubkey, int(record.is_prod), record.created_at,
                     record.last_seen, record.ca_serial, record.owner, record.group),
                )
                if cursor.rowcount > 0:
                    added.add(record.uuid)
            for uuid, pubkey in writes.rotated.items():
                self.complete_rotation(uuid, pubkey)  # not when the pending key changed meanwhile
            if writes.seen:
                with self._lock:
                    self._conn.executemany(
                        "UPDATE devices SET last_seen = ? WHERE uuid = ?", [(when, uuid) for uuid, when in writes.seen.items()]
                    )
        return added

    def devices_named(self, name: str) -> list[DeviceRecord]:
        rows = self._query("SELECT * FROM devices WHERE name = ? AND deny_listed = 0 ORDER BY uuid", (name,))
        return [_device_from_row(row) for row in rows.fetchall()]

    def denied_devices(self) -> list[DeviceRecord]:
        rows = self._query("SELECT * FROM devices WHERE deny_listed = 1 ORDER BY created_at, uuid").fetchall()
        return [_device_from_row(row) for row in rows]

    def set_pending_key(self, uuid: str, pubkey: str, ca_serial: str) -> bool:
        """EST issued `uuid` a certificate for `pubkey`: the gateway accepts it beside the
        current key until the device first uses it (a newer re-enrolment replaces it). False
        when there is no such device or it is deleted."""
        cursor = self._execute(
            "UPDATE devices SET pending_pubkey = ?, pending_ca_serial = ? WHERE uuid = ? AND deny_listed = 0",
            (pubkey, ca_serial, uuid),
        )
        return cursor.rowcount > 0

    def complete_rotation(self, uuid: str, pubkey: str) -> bool:
        """The device used its pending key: it becomes the one key pinned (the old one is
        refused from now on). False when `pubkey` is not the pending key (any more)."""
        cursor = self._execute(
            "UPDATE devices SET pubkey = pending_pubkey, ca_serial = pending_ca_serial,"
            " pending_pubkey = NULL, pending_ca_serial = NULL WHERE uuid = ? AND pending_pubkey = ?",
            (uuid, pubkey),
        )
        return cursor.rowcount > 0

    def set_device_deny_listed(self, uuid: str, deny_listed: bool = True) -> bool:
        """Put a device on (or take it off) the deny-list; False when there is no such device."""
        cursor = self._execute("UPDATE devices SET deny_listed = ? WHERE uuid = ?", (int(deny_listed), uuid))
        return cursor.rowcount > 0

    def forget_denied_device(self, uuid: str) -> bool:
        """Take a deleted device off the deny-list for good, so its uuid can be used again
        (fioctl's `devices delete-denied`); False when no deleted device has that uuid."""
        cursor = self._execute("DELETE FROM devices WHERE uuid = ? AND deny_listed = 1", (uuid,))
        return cursor.rowcount > 0

    # -- OAuth (oauth.py) ----------------------------------------------------------------------

    def add_oauth_token(self, *, access_hash: str, refresh_hash: str | None, grant_type: str, client_id: str,
                        scope: str, expires_at: float) -> None:
        self._execute(
            "INSERT INTO oauth_tokens (access_hash, refresh_hash, grant_type, client_id, scope, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (access_hash, refresh_hash, grant_type, client_id, scope, expires_at),
        )

    def oauth_token(self, access_hash: str) -> OAuthToken | None:
        row = self._query(
            "SELECT access_hash, grant_type, client_id, scope, expires_at FROM oauth_tokens WHERE access_hash = ?",
            (access_hash,),
        ).fetchone()
        return None if row is None else OAuthToken(**{key: row[key] for key in row.keys()})

    def take_refresh_token(self, refresh_hash: str, client_id: str) -> OAuthToken | None:
        """The token pair a refresh token belongs to, removed (a refresh token works once, and
        the access token it came with ends with it); None when unknown or another client's."""
        with self.transaction():
            row = self._query(
                "SELECT access_hash, grant_type, client_id, scope, expires_at FROM oauth_tokens"
                " WHERE refresh_hash = ? AND client_id = ?", (refresh_hash, client_id),
            ).fetchone()
            if row is None:
                return None
            self._execute("DELETE FROM oauth_tokens WHERE access_hash = ?", (row["access_hash"],))
        return OAuthToken(**{key: row[key] for key in row.keys()})

    def add_device_authorization(self, *, code_hash: str, user_code: str, client_id: str, scope: str,
                                 expires_at: float) -> None:
        self._execute(
            "INSERT INTO device_authorizations (code_hash, user_code, client_id, scope, expires_at, state)"
            " VALUES (?, ?, ?, ?, ?, 'pending')",
            (code_hash, user_code, client_id, scope, expires_at),
        )

    def device_authorization(self, code_hash: str) -> DeviceAuthorization | None:
        row = self._query(
            "SELECT user_code, client_id, scope, expires_at, state FROM device_authorizations WHERE code_hash = ?",
            (code_hash,),
        ).fetchone()
        return None if row is None else DeviceAuthorization(**{key: row[key] for key in row.keys()})

    def decide_device_authorization(self, user_code: str, state: str, now: float) -> bool:
        """A user approves or denies a pending, unexpired authorization; False when none is."""
        cursor = self._execute(
            "UPDATE device_authorizations SET state = ? WHERE user_code = ? AND state = 'pending' AND expires_at > ?",
            (state, user_code, now),
        )
        return cursor.rowcount > 0

    def use_device_authorization(self, code_hash: str) -> bool:
        """Mark an approved authorization used; True only for the one caller that did it."""
        cursor = self._execute(
            "UPDATE device_authorizations SET state = 'used' WHERE code_hash = ? AND state = 'approved'", (code_hash,)
        )
        return cursor.rowcount > 0

    # -- injected faults ---------------------------------------------------------------------

    def add_fault(self, *, method: str = "*", route: str = "*", status: int = 500, message: str = "injected fault",
                  times: int = 1, stall: float = 0.0, apply: bool = False) -> None:
        """Make the next `times` matching requests fail (see Sandbox.inject_fault)."""
        self._execute(
            "INSERT INTO faults (method, route, status, message, remaining, stall, apply) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (method.upper(), route, status, message, times, stall, int(apply)),
        )

    def take_fault(self, method: str, route: str) -> Fault | None:
        """The first fault matching this request, counted down once; None when none applies."""
        if self._query("SELECT 1 FROM faults LIMIT 1").fetchone() is None:
            return None  # the usual case: no write transaction per request
        with self.transaction():
            row = self._query(
                "SELECT * FROM faults WHERE remaining > 0 AND method IN (?, '*') AND route IN (?, '*')"
                " ORDER BY id LIMIT 1",
                (method.upper(), route),
            ).fetchone()
            if row is None:
                return None
            self._execute("UPDATE faults SET remaining = remaining - 1 WHERE id = ?", (row["id"],))
            self._execute("DELETE FROM faults WHERE remaining <= 0")
        return Fault(method=row["method"], route=row["route"], status=row["status"], message=row["message"],
                     stall=row["stall"], apply=bool(row["apply"]))

    def clear_faults(self) -> None:
        self._execute("DELETE FROM faults")


def _device_from_row(row: sqlite3.Row) -> DeviceRecord:
    return DeviceRecord(
        uuid=row["uuid"],
        name=row["name"],
        pubkey=row["pubkey"],
        is_prod=bool(row["is_prod"]),
        created_at=row["created_at"],
        last_seen=row["last_seen"],
        deny_listed=bool(row["deny_listed"]),
        ca_serial=row["ca_serial"],
        owner=row["owner"],
        group=row["device_group"],
        pending_pubkey=row["pending_pubkey"],
        pending_ca_serial=row["pending_ca_serial"],
    )
