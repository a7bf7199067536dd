"""Image rows: the gallery's pages and search, one image, favourites, delete.

Search stops at one page whatever the gallery's size: FTS5 hands back matching rowids newest
first (`ORDER BY rowid DESC` with the limit inside, keyset on rowid), and the other filters are
applied to that chunk; more chunks are read only while the page is short, up to a bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.store.database import Database
from engine.store.records import ImagePage, ImageQuery, ImageRecord

# Search reads matching rowids in chunks of at least this many, and at most SCAN_LIMIT rows
# for one page (a filter that rejects most matches then gives a short page with a cursor).
SEARCH_CHUNK = 64
SCAN_LIMIT = 20_000
MAX_CURSOR = 2**63 - 1

_COLUMNS = [
    "id", "job_id", "idx", "seed", "width", "height", "prompt", "negative_prompt", "steps",
    "guidance", "scheduler", "model", "kind", "parent_image_id", "source", "author_id",
    "author_name", "guild_id", "channel_id", "is_nsfw_channel", "is_flagged", "seconds",
    "created_at", "file_name", "message_url", "model_hash", "style", "loras",
]  # fmt: skip


class ImageRows:
    """The `images`, `images_fts` and `favourites` tables (mixed into Store)."""

    db: Database

    def image(self, image_id: str, include_deleted: bool = False) -> ImageRecord | None:
        """Return one image, or None."""
        row = (
            self.db.connection()
            .execute("SELECT * FROM images WHERE id = ?", (image_id,))
            .fetchone()
        )
        if row is None or (row["is_deleted"] and not include_deleted):
            return None
        return image_of(row)

    def images_of_job(self, job_id: str) -> list[ImageRecord]:
        """Return a job's images in order."""
        rows = self.db.connection().execute(
            "SELECT * FROM images WHERE job_id = ? AND is_deleted = 0 ORDER BY idx", (job_id,)
        )
        return [image_of(row) for row in rows]

    def list_images(self, query: ImageQuery) -> list[ImageRecord]:
        """Return up to `query.limit` images, newest first (see `page_images`)."""
        return self.page_images(query).images

    def page_images(self, query: ImageQuery) -> ImagePage:
        """Return one gallery page and the cursor of the next (keyset: no OFFSET scans)."""
        if query.text.strip():
            return self._search(query)
        clauses, params, joins = _filters(query)
        if query.before is not None:
            clauses.append("images.n < ?")
            params.append(query.before)
        sql = (
            f"SELECT images.* FROM images{joins} WHERE {' AND '.join(clauses)}"
            " ORDER BY images.n DESC LIMIT ?"
        )
        rows = self.db.connection().execute(sql, [*params, query.limit + 1]).fetchall()
        images = [image_of(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit and images
        return ImagePage(images, images[-1].n if more else None)

    def _search(self, query: ImageQuery) -> ImagePage:
        conn = self.db.connection()
        clauses, params, joins = _filters(query)
        match = fts_query(query.text)
        before = MAX_CURSOR if query.before is None else query.before
        chunk = max(SEARCH_CHUNK, 2 * (query.limit + 1))
        found: list[ImageRecord] = []
        scanned = 0
        while len(found) <= query.limit and scanned < SCAN_LIMIT:
            rowids = [
                row[0]
                for row in conn.execute(
                    "SELECT rowid FROM images_fts WHERE images_fts MATCH ? AND rowid < ?"
                    " ORDER BY rowid DESC LIMIT ?",
                    (match, before, chunk),
                )
            ]
            if not rowids:
                return ImagePage(found[: query.limit], None)
            scanned += len(rowids)
            marks = ",".join("?" * len(rowids))
            sql = (
                f"SELECT images.* FROM images{joins} WHERE images.n IN ({marks})"
                f" AND {' AND '.join(clauses)} ORDER BY images.n DESC"
            )
            found += [image_of(row) for row in conn.execute(sql, [*rowids, *params])]
            before = rowids[-1]
            if len(rowids) < chunk:
                return ImagePage(found[: query.limit], _cursor(found, query.limit, None))
        return ImagePage(found[: query.limit], _cursor(found, query.limit, before))

    def count_images(self) -> int:
        """Return how many images are in the gallery."""
        row = self.db.connection().execute("SELECT COUNT(*) FROM images WHERE is_deleted = 0")
        return int(row.fetchone()[0])

    def insert_images(self, images: Sequence[ImageRecord]) -> None:
        """Insert image rows (bulk seeding for benchmarks and imports)."""

        def insert(conn: sqlite3.Connection) -> None:
            for image in images:
                insert_image(conn, image)

        self.db.transaction(insert)

    def hide_image(self, image_id: str) -> ImageRecord | None:
        """Take an image out of the gallery and its search; return it, or None if not there."""

        def hide(conn: sqlite3.Connection) -> ImageRecord | None:
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
            return image_of(row)

        return self.db.transaction(hide)

    def set_message_url(self, job_id: str, url: str) -> None:
        """Link a job's images to the Discord message that shows them."""

        def link(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE images SET message_url = ? WHERE job_id = ?", (url, job_id))

        self.db.transaction(link)

    def set_favourite(self, image_id: str, user_key: str, is_favourite: bool, at: float) -> int:
        """Add or remove a favourite; return the image's new favourite count."""

        def change(conn: sqlite3.Connection) -> int:
            if is_favourite:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO favourites VALUES (?, ?, ?)", (image_id, user_key, at)
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
            row = conn.execute("SELECT favourites FROM images WHERE id = ?", (image_id,)).fetchone()
            return int(row[0]) if row else 0

        return self.db.transaction(change)

    def is_favourite(self, image_id: str, user_key: str) -> bool:
        """Return whether a user favourited an image."""
        row = (
            self.db.connection()
            .execute(
                "SELECT 1 FROM favourites WHERE image_id = ? AND user_key = ?", (image_id, user_key)
            )
            .fetchone()
        )
        return row is not None


def _filters(query: ImageQuery) -> tuple[list[str], list[Any], str]:
    """Return the WHERE clauses, their parameters and the joins for every filter but text."""
    clauses = ["images.is_deleted = 0"]
    params: list[Any] = []
    joins = ""
    if query.favourites_of:
        joins += " JOIN favourites ON favourites.image_id = images.id"
        clauses.append("favourites.user_key = ?")
        params.append(query.favourites_of)
    for column, value in (
        ("source", query.source),
        ("author_id", query.author_id),
        ("style", query.style),
    ):
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
    return clauses, params, joins


def _cursor(found: list[ImageRecord], limit: int, scanned_to: int | None) -> int | None:
    """Return where the next page starts: after this page's last image, or where the scan ended."""
    if len(found) > limit:
        return found[limit - 1].n
    return scanned_to


def fts_query(text: str) -> str:
    """Quote each word so user text is never FTS syntax; words are ANDed, last one a prefix."""
    # Quotes and control characters (NUL reaches FTS5 as a syntax error) never get through.
    cleaned = "".join(c for c in text if c == " " or (c.isprintable() and c != '"'))
    words = cleaned.split()
    if not words:
        return '""'
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def insert_image(conn: sqlite3.Connection, image: ImageRecord) -> None:
    """Insert one image row; a rerun after a crash writes the same id and keeps the first row."""
    values = [getattr(image, name) for name in _COLUMNS]
    marks = ",".join("?" * len(values))
    conn.execute(f"INSERT OR IGNORE INTO images ({','.join(_COLUMNS)}) VALUES ({marks})", values)


def image_of(row: sqlite3.Row) -> ImageRecord:
    """Return the record of one `images` row."""
    data = dict(row)
    data["is_nsfw_channel"] = bool(data["is_nsfw_channel"])
    data["is_flagged"] = bool(data["is_flagged"])
    data["is_deleted"] = bool(data["is_deleted"])
    return ImageRecord(**data)
