"""The schema and its forward migrations, numbered by SQLite's `PRAGMA user_version`.

Version 1 is the schema of the first release (whose databases say user_version 0 but already
hold its tables, hence `IF NOT EXISTS`). Each later version is a list of statements applied once,
in one transaction, in order; a database is never migrated backwards. Add a version at the end;
never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

from engine.store.errors import StoreError

V1 = [
    """CREATE TABLE IF NOT EXISTS jobs (
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
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_requester ON jobs(requester_key, created_at)",
    """CREATE TABLE IF NOT EXISTS images (
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
    )""",
    "CREATE INDEX IF NOT EXISTS images_job ON images(job_id, idx)",
    "CREATE INDEX IF NOT EXISTS images_author ON images(author_id, n)",
    "CREATE INDEX IF NOT EXISTS images_source ON images(source, n)",
    "CREATE INDEX IF NOT EXISTS images_created ON images(created_at)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
        prompt, negative_prompt, content='images', content_rowid='n', tokenize='unicode61'
    )""",
    """CREATE TRIGGER IF NOT EXISTS images_ai AFTER INSERT ON images BEGIN
        INSERT INTO images_fts(rowid, prompt, negative_prompt)
        VALUES (new.n, new.prompt, new.negative_prompt);
    END""",
    """CREATE TRIGGER IF NOT EXISTS images_ad AFTER DELETE ON images BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt)
        VALUES ('delete', old.n, old.prompt, old.negative_prompt);
    END""",
    """CREATE TABLE IF NOT EXISTS favourites (
        image_id TEXT NOT NULL,
        user_key TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (image_id, user_key)
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        rule TEXT NOT NULL DEFAULT '',
        prompt TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS bans (
        user_key TEXT PRIMARY KEY,
        until REAL,
        reason TEXT NOT NULL DEFAULT '',
        by TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    )""",
]

# Version 2 (many models, many workers): which worker ran a job, the short hash A1111 writes
# for the checkpoint (image browsers match models by it), and author names searchable by name.
V2 = [
    "ALTER TABLE jobs ADD COLUMN worker TEXT",
    "ALTER TABLE images ADD COLUMN model_hash TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS images_author_name ON images(author_name COLLATE NOCASE, n)",
]

# Version 3 (remote workers): the task a job's current attempt runs as, so a restarted front
# collects its result from Redis or finds it still running, instead of running it twice.
V3 = ["ALTER TABLE jobs ADD COLUMN task_id TEXT"]

# Version 4 (images in): a job's init image and mask, stored with the job when it is accepted,
# so a rerun after a restart reads them here (never the source image again, never a CDN).
V4 = [
    """CREATE TABLE IF NOT EXISTS job_inputs (
        job_id TEXT PRIMARY KEY,
        init_png BLOB,
        mask_png BLOB
    )"""
]

# Version 5 (styles): the style an image was made with (its name; "" for none), searchable.
V5 = [
    "ALTER TABLE images ADD COLUMN style TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX IF NOT EXISTS images_style ON images(style, n)",
]

# Version 6 (starboard): result messages reposted to the starboard channel, once each.
V6 = [
    """CREATE TABLE IF NOT EXISTS starboard (
        message_id TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        stars INTEGER NOT NULL DEFAULT 0,
        posted_message_id TEXT,
        posted_at REAL
    )""",
    # A starred message finds its job by the message id its delivery recorded.
    "CREATE INDEX IF NOT EXISTS jobs_message ON jobs(json_extract(delivery, '$.message_id'))",
]

# Version 7 (your settings): per-person defaults for /imagine and the web form.
V7 = [
    """CREATE TABLE IF NOT EXISTS preferences (
        user_key TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    )"""
]

# Version 8 (LoRAs): the LoRAs an image was made with, as `name:0.8 other:1` ("" for none).
V8 = ["ALTER TABLE images ADD COLUMN loras TEXT NOT NULL DEFAULT ''"]

# Version 9 (people on the web): personal API tokens (hashed) and boards; likes are favourites.
V9: list[str] = [
    """CREATE TABLE IF NOT EXISTS api_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_key TEXT NOT NULL,
        requester TEXT NOT NULL,
        label TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL,
        revoked_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS api_tokens_user ON api_tokens(user_key, created_at)",
    """CREATE TABLE IF NOT EXISTS boards (
        id TEXT PRIMARY KEY,
        owner_key TEXT NOT NULL,
        name TEXT NOT NULL,
        is_public INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS boards_owner ON boards(owner_key, created_at)",
    """CREATE TABLE IF NOT EXISTS board_images (
        board_id TEXT NOT NULL REFERENCES boards(id) ON DELETE CASCADE,
        image_id TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (board_id, image_id)
    )""",
]

MIGRATIONS: list[list[str]] = [V1, V2, V3, V4, V5, V6, V7, V8, V9]
VERSION = len(MIGRATIONS)


def version_of(conn: sqlite3.Connection) -> int:
    """Return the database's schema version."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks, each in its own transaction; return the version.

    Two processes opening one database at once agree: the version is read again under the
    write lock, so each migration runs once.
    """
    while version_of(conn) < VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = version_of(conn)
            if current < VERSION:
                for statement in MIGRATIONS[current]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    current = version_of(conn)
    if current > VERSION:
        raise StoreError(
            f"the database has schema version {current}, newer than this program's {VERSION}; "
            "run the newer imagine, or restore a backup of the data folder"
        )
    return current
