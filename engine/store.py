"""SQLite records (jobs, images, audit log, bans) and image files. The only module with SQL.

WAL mode, `BEGIN IMMEDIATE` for writes, a busy timeout and a bounded retry when the database
stays locked. Image files are written to a temp name, fsynced and renamed, named by image id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    requester_key TEXT NOT NULL,
    requester TEXT NOT NULL,
    request TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT UNIQUE,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    seconds REAL,
    delivered_at REAL,
    delivery TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_requester ON jobs(requester_key, created_at);
CREATE TABLE IF NOT EXISTS images (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL,
    steps INTEGER NOT NULL,
    guidance REAL NOT NULL,
    scheduler TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    parent_image_id TEXT,
    source TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT NOT NULL,
    guild_id TEXT,
    channel_id TEXT,
    is_nsfw_channel INTEGER NOT NULL DEFAULT 0,
    is_flagged INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL,
    created_at REAL NOT NULL,
    file_name TEXT NOT NULL,
    message_url TEXT,
    favourites INTEGER NOT NULL DEFAULT 0,
    is_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_job ON images(job_id, idx);
CREATE INDEX IF NOT EXISTS images_author ON images(author_id, n);
CREATE INDEX IF NOT EXISTS images_source ON images(source, n);
CREATE INDEX IF NOT EXISTS images_author_name ON images(author_name COLLATE NOCASE, n);
CREATE INDEX IF NOT EXISTS images_created ON images(created_at);
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
    prompt, negative_prompt, content='images', content_rowid='n', tokenize='unicode61'
);
CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
    INSERT INTO images_fts(rowid, prompt, negative_prompt)
    VALUES (new.n, new.prompt, new.negative_prompt);
END;
CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
    INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt)
    VALUES ('delete', old.n, old.prompt, old.negative_prompt);
END;
CREATE TABLE IF NOT EXISTS favourites (
    image_id TEXT NOT NULL,
    user_key TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (image_id, user_key)
);
CREATE TABLE IF NOT EXISTS audit (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL DEFAULT '',
    prompt TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS bans (
    user_key TEXT PRIMARY KEY,
    until REAL,
    reason TEXT NOT NULL DEFAULT '',
    by TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
"""

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class JobRecord:
    """One job row."""

    id: str
    seq: int
    state: str
    requester_key: str
    requester: dict[str, Any]
    request: dict[str, Any]
    origin: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    seconds: float | None
    delivered_at: float | None
    delivery: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image row: everything needed to reproduce it."""

    id: str
    job_id: str
    idx: int
    seed: int
    width: int
    height: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    scheduler: str
    model: str
    kind: str
    source: str
    author_id: str
    author_name: str
    seconds: float
    created_at: float
    file_name: str
    parent_image_id: str | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    is_nsfw_channel: bool = False
    is_flagged: bool = False
    message_url: str | None = None
    favourites: int = 0
    is_deleted: bool = False
    n: int = 0


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: a rejected prompt or a moderator action."""

    n: int
    at: float
    action: str
    actor: str
    target: str
    rule: str
    prompt: str
    detail: str


@dataclass(frozen=True)
class Ban:
    """A banned requester key; `until` None means forever."""

    user_key: str
    until: float | None
    reason: str
    by: str
    at: float


@dataclass(frozen=True)
class ImageQuery:
    """Gallery filters; `before` is the cursor (an image's `n`)."""

    text: str = ""
    source: str | None = None
    author_id: str | None = None
    author_name: str | None = None
    since: float | None = None
    until: float | None = None
    favourites_of: str | None = None
    include_nsfw: bool = True
    before: int | None = None
    limit: int = 48
    extra: dict[str, Any] = field(default_factory=dict)


class StoreError(Exception):
    """The store could not complete a write (disk full, read-only, locked too long)."""


class Store:
    """SQLite database plus the images folder under one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], busy_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))  # settings give it absolute already
        self.images_dir = self.data_dir / "images"
        self.db_path = self.data_dir / "imagine.sqlite3"
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.write_attempts = 5

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create folders and schema; remove temp files a crash left behind."""
        self.images_dir.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        self.remove_temp_files()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path,
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

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _retry(self, action: Callable[[], T]) -> T:
        """Run a write; retry a bounded number of times while the database is locked."""
        delay = 0.05
        for attempt in range(self.write_attempts):
            try:
                return action()
            except sqlite3.OperationalError as error:
                locked = "locked" in str(error) or "busy" in str(error)
                if not locked or attempt == self.write_attempts - 1:
                    raise StoreError(f"database write failed: {error}") from error
                log.warning("database busy, retrying (%d/%d)", attempt + 1, self.write_attempts)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def integrity_check(self) -> str:
        """Return SQLite's integrity check verdict ('ok' when healthy)."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    # -- jobs ------------------------------------------------------------------------------

    def insert_job(
        self,
        job_id: str,
        requester_key: str,
        requester: dict[str, Any],
        request: dict[str, Any],
        origin: dict[str, Any],
        idempotency_key: str | None,
        created_at: float,
    ) -> JobRecord:
        """Persist a queued job; return the existing job when the idempotency key was seen."""

        def action() -> JobRecord:
            with self._write() as conn:
                if idempotency_key is not None:
                    row = conn.execute(
                        "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                    ).fetchone()
                    if row is not None:
                        return _job(row)
                conn.execute(
                    "INSERT INTO jobs (id, state, requester_key, requester, request, origin,"
                    " idempotency_key, created_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        requester_key,
                        json.dumps(requester),
                        json.dumps(request),
                        json.dumps(origin),
                        idempotency_key,
                        created_at,
                    ),
                )
                return _job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

        return self._retry(action)

    def job(self, job_id: str) -> JobRecord | None:
        """Return one job, or None."""
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def job_by_key(self, idempotency_key: str) -> JobRecord | None:
        """Return the job submitted with this idempotency key, or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
            .fetchone()
        )
        return _job(row) if row else None

    def jobs_in_state(self, *states: str) -> list[JobRecord]:
        """Return jobs in the given states, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self._conn().execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", states
        )
        return [_job(row) for row in rows]

    def recent_jobs(self, requester_key: str | None = None, limit: int = 20) -> list[JobRecord]:
        """Return the newest jobs, of one requester or of everyone."""
        if requester_key is None:
            rows = self._conn().execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._conn().execute(
                "SELECT * FROM jobs WHERE requester_key = ? ORDER BY seq DESC LIMIT ?",
                (requester_key, limit),
            )
        return [_job(row) for row in rows]

    def mark_started(self, job_ids: Sequence[str], at: float) -> None:
        """Mark jobs running and count the attempt (before any GPU work)."""

        def action() -> None:
            with self._write() as conn:
                conn.executemany(
                    "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1"
                    " WHERE id = ? AND state IN ('queued', 'running')",
                    [(at, job_id) for job_id in job_ids],
                )

        self._retry(action)

    def finish_job(
        self,
        job_id: str,
        state: str,
        at: float,
        error: str | None = None,
        seconds: float | None = None,
        images: Sequence[ImageRecord] = (),
    ) -> None:
        """Record a job's end and its images in one transaction (idempotent for reruns)."""
        assert state in FINAL_STATES

        def action() -> None:
            with self._write() as conn:
                for image in images:
                    _insert_image(conn, image)
                conn.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, error = ?, seconds = ?"
                    " WHERE id = ?",
                    (state, at, error, seconds, job_id),
                )

        self._retry(action)

    def requeue_interrupted(self, max_attempts: int, at: float) -> tuple[list[str], list[str]]:
        """After a crash: requeue running jobs with attempts left, fail the rest.

        Return (requeued ids, failed ids).
        """

        def action() -> tuple[list[str], list[str]]:
            with self._write() as conn:
                rows = conn.execute(
                    "SELECT id, attempts FROM jobs WHERE state = 'running' ORDER BY seq"
                ).fetchall()
                requeued, failed = [], []
                for row in rows:
                    if row["attempts"] >= max_attempts:
                        conn.execute(
                            "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?"
                            " WHERE id = ?",
                            (at, f"interrupted {row['attempts']} times; gave up", row["id"]),
                        )
                        failed.append(row["id"])
                    else:
                        conn.execute("UPDATE jobs SET state = 'queued' WHERE id = ?", (row["id"],))
                        requeued.append(row["id"])
                return requeued, failed

        return self._retry(action)

    def images_requested_since(self, requester_key: str, since: float) -> list[tuple[float, int]]:
        """Return (created_at, count) of a requester's accepted, not failed jobs since a time."""
        rows = self._conn().execute(
            "SELECT created_at, request FROM jobs WHERE requester_key = ? AND created_at >= ?"
            " AND state NOT IN ('failed', 'cancelled') ORDER BY created_at",
            (requester_key, since),
        )
        return [
            (row["created_at"], int(json.loads(row["request"]).get("count") or 1)) for row in rows
        ]

    def last_submit_at(self) -> dict[str, float]:
        """Return each requester's newest job time (cooldowns survive a restart)."""
        rows = self._conn().execute(
            "SELECT requester_key, MAX(created_at) AS at FROM jobs GROUP BY requester_key"
        )
        return {row["requester_key"]: row["at"] for row in rows}

    def mark_delivered(self, job_id: str, delivery: dict[str, Any], at: float) -> bool:
        """Record that a frontend delivered a job; False when it was already delivered."""

        def action() -> bool:
            with self._write() as conn:
                cursor = conn.execute(
                    "UPDATE jobs SET delivered_at = ?, delivery = ? WHERE id = ?"
                    " AND delivered_at IS NULL",
                    (at, json.dumps(delivery), job_id),
                )
                return cursor.rowcount == 1

        return self._retry(action)

    def update_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Replace a job's delivery notes (message ids, attempts) without marking it delivered."""

        def action() -> None:
            with self._write() as conn:
                conn.execute(
                    "UPDATE jobs SET delivery = ? WHERE id = ?", (json.dumps(delivery), job_id)
                )

        self._retry(action)

    def undelivered(self, source: str) -> list[JobRecord]:
        """Return finished jobs of one frontend that were not delivered yet."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE delivered_at IS NULL"
            " AND state IN ('done', 'failed', 'cancelled')"
            " AND requester_key LIKE ? ORDER BY seq",
            (source + ":%",),
        )
        return [_job(row) for row in rows]

    # -- images ----------------------------------------------------------------------------

    def image_path(self, file_name: str) -> Path:
        """Return the path of an image file inside the images folder."""
        return self.images_dir / file_name

    def write_image_file(self, file_name: str, data: bytes) -> Path:
        """Write bytes to a temp name, fsync, rename: a reader never sees half a PNG."""
        final = self.images_dir / file_name
        temp = self.images_dir / f".{file_name}.tmp"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except OSError as error:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StoreError(f"cannot write image: {error.strerror or error}") from error
        return final

    def remove_temp_files(self) -> int:
        """Delete temp files left by an interrupted write; return how many."""
        removed = 0
        for path in self.images_dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed

    def image(self, image_id: str, include_deleted: bool = False) -> ImageRecord | None:
        """Return one image, or None."""
        row = self._conn().execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None or (row["is_deleted"] and not include_deleted):
            return None
        return _image(row)

    def images_of_job(self, job_id: str) -> list[ImageRecord]:
        """Return a job's images in order."""
        rows = self._conn().execute(
            "SELECT * FROM images WHERE job_id = ? AND is_deleted = 0 ORDER BY idx", (job_id,)
        )
        return [_image(row) for row in rows]

    def list_images(self, query: ImageQuery) -> list[ImageRecord]:
        """Return a gallery page, newest first, using a keyset cursor (no OFFSET scans)."""
        clauses = ["images.is_deleted = 0"]
        params: list[Any] = []
        joins = ""
        if query.text.strip():
            joins += " JOIN images_fts ON images_fts.rowid = images.n"
            clauses.append("images_fts MATCH ?")
            params.append(_fts_query(query.text))
        if query.favourites_of:
            joins += " JOIN favourites ON favourites.image_id = images.id"
            clauses.append("favourites.user_key = ?")
            params.append(query.favourites_of)
        for column, value in (("source", query.source), ("author_id", query.author_id)):
            if value:
                clauses.append(f"images.{column} = ?")
                params.append(value)
        if query.author_name:
            clauses.append("images.author_name = ? COLLATE NOCASE")
            params.append(query.author_name)
        if query.since is not None:
            clauses.append("images.created_at >= ?")
            params.append(query.since)
        if query.until is not None:
            clauses.append("images.created_at < ?")
            params.append(query.until)
        if not query.include_nsfw:
            clauses.append("images.is_nsfw_channel = 0 AND images.is_flagged = 0")
        if query.before is not None:
            clauses.append("images.n < ?")
            params.append(query.before)
        sql = (
            f"SELECT images.* FROM images{joins} WHERE {' AND '.join(clauses)}"
            " ORDER BY images.n DESC LIMIT ?"
        )
        params.append(query.limit)
        return [_image(row) for row in self._conn().execute(sql, params)]

    def count_images(self) -> int:
        """Return how many images are in the gallery."""
        return int(
            self._conn().execute("SELECT COUNT(*) FROM images WHERE is_deleted = 0").fetchone()[0]
        )

    def insert_images(self, images: Sequence[ImageRecord]) -> None:
        """Insert image rows (bulk seeding for benchmarks and imports)."""

        def action() -> None:
            with self._write() as conn:
                for image in images:
                    _insert_image(conn, image)

        self._retry(action)

    def delete_image(self, image_id: str) -> bool:
        """Hide an image from the gallery and remove its file; False if it was not there."""

        def action() -> ImageRecord | None:
            with self._write() as conn:
                row = conn.execute(
                    "SELECT * FROM images WHERE id = ? AND is_deleted = 0", (image_id,)
                ).fetchone()
                if row is None:
                    return None
                conn.execute("UPDATE images SET is_deleted = 1 WHERE id = ?", (image_id,))
                conn.execute(
                    "INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt)"
                    " VALUES ('delete', ?, ?, ?)",
                    (row["n"], row["prompt"], row["negative_prompt"]),
                )
                return _image(row)

        image = self._retry(action)
        if image is None:
            return False
        with contextlib.suppress(OSError):
            self.image_path(image.file_name).unlink()
        return True

    def set_message_url(self, job_id: str, url: str) -> None:
        """Link a job's images to the Discord message that shows them."""

        def action() -> None:
            with self._write() as conn:
                conn.execute("UPDATE images SET message_url = ? WHERE job_id = ?", (url, job_id))

        self._retry(action)

    def set_favourite(self, image_id: str, user_key: str, is_favourite: bool, at: float) -> int:
        """Add or remove a favourite; return the image's new favourite count."""

        def action() -> int:
            with self._write() as conn:
                if is_favourite:
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO favourites VALUES (?, ?, ?)",
                        (image_id, user_key, at),
                    )
                    delta = cursor.rowcount
                else:
                    cursor = conn.execute(
                        "DELETE FROM favourites WHERE image_id = ? AND user_key = ?",
                        (image_id, user_key),
                    )
                    delta = -cursor.rowcount
                conn.execute(
                    "UPDATE images SET favourites = MAX(0, favourites + ?) WHERE id = ?",
                    (delta, image_id),
                )
                row = conn.execute(
                    "SELECT favourites FROM images WHERE id = ?", (image_id,)
                ).fetchone()
                return int(row[0]) if row else 0

        return self._retry(action)

    def is_favourite(self, image_id: str, user_key: str) -> bool:
        """Return whether a user favourited an image."""
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM favourites WHERE image_id = ? AND user_key = ?", (image_id, user_key)
            )
            .fetchone()
        )
        return row is not None

    # -- audit and bans --------------------------------------------------------------------

    def add_audit(
        self,
        action: str,
        actor: str,
        at: float,
        target: str = "",
        rule: str = "",
        prompt: str = "",
        detail: str = "",
    ) -> None:
        """Append an audit entry (rejected prompt or moderator action)."""

        def write() -> None:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO audit (at, action, actor, target, rule, prompt, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (at, action, actor, target, rule, prompt[:2000], detail[:2000]),
                )

        self._retry(write)

    def audit(self, limit: int = 20, action: str | None = None) -> list[AuditEntry]:
        """Return the newest audit entries."""
        if action is None:
            rows = self._conn().execute("SELECT * FROM audit ORDER BY n DESC LIMIT ?", (limit,))
        else:
            rows = self._conn().execute(
                "SELECT * FROM audit WHERE action = ? ORDER BY n DESC LIMIT ?", (action, limit)
            )
        return [AuditEntry(**dict(row)) for row in rows]

    def set_ban(self, user_key: str, until: float | None, reason: str, by: str, at: float) -> None:
        """Ban a requester key (replacing any earlier ban)."""

        def action() -> None:
            with self._write() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?)",
                    (user_key, until, reason, by, at),
                )

        self._retry(action)

    def remove_ban(self, user_key: str) -> bool:
        """Lift a ban; False when there was none."""

        def action() -> bool:
            with self._write() as conn:
                return (
                    conn.execute("DELETE FROM bans WHERE user_key = ?", (user_key,)).rowcount == 1
                )

        return self._retry(action)

    def bans(self) -> list[Ban]:
        """Return every ban."""
        return [Ban(**dict(row)) for row in self._conn().execute("SELECT * FROM bans")]

    def quick_check(self) -> str:
        """Return SQLite's quick check verdict ('ok' when healthy); cheaper than integrity_check."""
        return str(self._conn().execute("PRAGMA quick_check").fetchone()[0])


def _fts_query(text: str) -> str:
    """Quote each word so user text is never FTS syntax; words are ANDed, last one a prefix."""
    # Quotes and control characters (NUL reaches FTS5 as a syntax error) never get through.
    cleaned = "".join(c for c in text if c == " " or (c.isprintable() and c != '"'))
    words = cleaned.split()
    if not words:
        return '""'
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        seq=row["seq"],
        state=row["state"],
        requester_key=row["requester_key"],
        requester=json.loads(row["requester"]),
        request=json.loads(row["request"]),
        origin=json.loads(row["origin"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        error=row["error"],
        seconds=row["seconds"],
        delivered_at=row["delivered_at"],
        delivery=json.loads(row["delivery"]),
        idempotency_key=row["idempotency_key"],
    )


_IMAGE_COLUMNS = [
    "id", "job_id", "idx", "seed", "width", "height", "prompt", "negative_prompt", "steps",
    "guidance", "scheduler", "model", "kind", "parent_image_id", "source", "author_id",
    "author_name", "guild_id", "channel_id", "is_nsfw_channel", "is_flagged", "seconds",
    "created_at", "file_name", "message_url",
]  # fmt: skip


def _insert_image(conn: sqlite3.Connection, image: ImageRecord) -> None:
    values = [getattr(image, name) for name in _IMAGE_COLUMNS]
    marks = ",".join("?" * len(values))
    # A rerun after a crash writes the same ids: keep the first row, never a duplicate.
    conn.execute(
        f"INSERT OR IGNORE INTO images ({','.join(_IMAGE_COLUMNS)}) VALUES ({marks})", values
    )


def _image(row: sqlite3.Row) -> ImageRecord:
    data = dict(row)
    data["is_nsfw_channel"] = bool(data["is_nsfw_channel"])
    data["is_flagged"] = bool(data["is_flagged"])
    data["is_deleted"] = bool(data["is_deleted"])
    return ImageRecord(**data)
