"""One SQLite database: a connection per thread, and `transaction()` with the retry built in.

WAL mode, `BEGIN IMMEDIATE` for every write, a busy timeout, and a bounded retry with backoff
when the database stays locked past it (a long reader, a second writer). A write that still
fails raises StoreError naming the cause; nothing is half-applied.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine.store.errors import StoreError
from engine.store.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")


class Database:
    """Connections (one per thread), schema upgrades and retried transactions."""

    def __init__(self, path: Path, busy_timeout_s: float = 10.0, write_attempts: int = 5) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.write_attempts = write_attempts
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def open(self) -> int:
        """Switch to WAL and bring the schema up to date; return the schema version."""
        conn = self.connection()
        conn.execute("PRAGMA journal_mode=WAL")
        return migrate(conn)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """Return this thread's connection (made on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def transaction(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run `action` in one `BEGIN IMMEDIATE` transaction; retry it while the database is locked.

        The action may run more than once, so it must only touch the database.
        """
        delay = 0.05
        for attempt in range(self.write_attempts):
            try:
                return self._once(action)
            except sqlite3.OperationalError as error:
                locked = "locked" in str(error) or "busy" in str(error)
                if not locked or attempt == self.write_attempts - 1:
                    raise StoreError(f"database write failed: {error}") from error
                log.warning("database busy, retrying (%d/%d)", attempt + 1, self.write_attempts)
                time.sleep(delay)
                delay *= 2
            except sqlite3.DatabaseError as error:  # disk full, read-only, corrupt
                raise StoreError(f"database write failed: {error}") from error
        raise AssertionError("unreachable")

    def _once(self, action: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = action(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return result

    def pragma(self, name: str) -> str:
        """Return a one-value PRAGMA's answer as text (integrity_check, quick_check...)."""
        return str(self.connection().execute(f"PRAGMA {name}").fetchone()[0])
