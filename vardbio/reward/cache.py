"""A persistent cache of oracle scores in one SQLite file.

Rows are keyed by the oracle's identity (name, version, parameters) and the oracle's canonical
key of a design (canonical SMILES, sequence, rounded-coordinate hash). Each row keeps the
score, the reason when it is NaN, and the provenance (oracle name, version, parameters, time).
Several processes may read and write the same file at once: the database runs in WAL mode
with a busy timeout, and every write is one short transaction. A committed row survives the
writing process being killed (even with SIGKILL: the WAL is in the operating system's
hands once a transaction commits); with `synchronous = NORMAL` the last transactions may
be lost only if the machine itself goes down. The runtime writes each result as its call
returns (about 50 µs per transaction), so a killed batch loses only the calls in flight.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oracles (
    oracle_id TEXT PRIMARY KEY,   -- sha1 of the identity string
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    params TEXT NOT NULL,         -- JSON
    identity TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    oracle_id TEXT NOT NULL,
    design_key TEXT NOT NULL,
    value REAL,                   -- NULL for NaN
    reason TEXT,                  -- why the value is NaN, else NULL
    created REAL NOT NULL,        -- unix time
    PRIMARY KEY (oracle_id, design_key)
);
"""


def _oracle_id(identity: str) -> str:
    return hashlib.sha1(identity.encode()).hexdigest()


class OracleCache:
    """SQLite-backed store of (oracle identity, design key) -> (value, reason).

    path: the database file (created with its folder if missing); ":memory:" for a cache that
    lives only in this object. timeout_s: how long a writer waits for a lock held by another
    process before giving up.
    """

    def __init__(self, path: str | os.PathLike, timeout_s: float = 60.0):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False,
                                   isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            self._set_up(conn)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. Switching the journal mode can report 'database is
        locked' at once (SQLite skips the busy handler there) while another process opens
        the same new file, so it is retried until timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __getstate__(self):
        return {"path": self.path, "timeout_s": self.timeout_s}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout_s"])

    def register(self, identity: str, name: str, version: str, params: dict) -> str:
        """Record an oracle's provenance; returns its id in the scores table."""
        oid = _oracle_id(identity)
        with self._lock:
            self._connect().execute(
                "INSERT OR IGNORE INTO oracles VALUES (?, ?, ?, ?, ?)",
                (oid, name, version, json.dumps(params, sort_keys=True, default=str), identity),
            )
        return oid

    def get_many(self, identity: str, keys: Sequence[str]) -> dict[str, tuple[float, str | None]]:
        """Cached (value, reason) for those of `keys` that are present."""
        oid = _oracle_id(identity)
        found: dict[str, tuple[float, str | None]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            conn = self._connect()
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT design_key, value, reason FROM scores "
                    f"WHERE oracle_id = ? AND design_key IN ({marks})", (oid, *chunk),
                ).fetchall()
                for key, value, reason in rows:
                    found[key] = (math.nan if value is None else float(value), reason)
        return found

    def put_many(self, identity: str, items: Iterable[tuple[str, float, str | None]]) -> None:
        """Store (design key, value, reason) rows; an existing row is replaced."""
        oid = _oracle_id(identity)
        now = time.time()
        rows = [(oid, key, None if math.isnan(value) else float(value), reason, now)
                for key, value, reason in items]
        if not rows:
            return
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def provenance(self, identity: str) -> dict | None:
        """Name, version and parameters stored for an oracle identity, or None."""
        with self._lock:
            row = self._connect().execute(
                "SELECT name, version, params FROM oracles WHERE oracle_id = ?",
                (_oracle_id(identity),),
            ).fetchone()
        if row is None:
            return None
        return {"oracle": row[0], "version": row[1], "params": json.loads(row[2])}

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
