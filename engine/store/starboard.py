"""Starboard rows: which result message shows which image, its stars, and its one repost.

A row is made the first time a result message gets a star. Its repost is claimed before it is
posted: `posted_message_id` goes from NULL to POSTING in one transaction (only one claim
wins), then to the starboard message's id. A claim left at POSTING by a crash may be taken
again once it is older than the caller's bound, so the repost is retried, never lost.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from engine.store.database import Database

POSTING = "posting"


@dataclass(frozen=True)
class StarboardEntry:
    """One starred result message."""

    message_id: str
    image_id: str
    channel_id: str
    stars: int
    posted_message_id: str | None
    posted_at: float | None

    @property
    def is_posted(self) -> bool:
        """Return whether the repost is on the starboard (not merely claimed)."""
        return self.posted_message_id is not None and self.posted_message_id != POSTING


class StarboardRows:
    """The `starboard` table, and finding the job a Discord message delivered (mixed into Store)."""

    db: Database

    def job_of_message(self, message_id: str) -> str | None:
        """Return the finished job whose delivery posted this Discord message, or None.

        Delivery notes are JSON without an index, so this reads every finished job's note;
        callers remember the answer in a starboard row and ask once per message.
        """
        row = (
            self.db.connection()
            .execute(
                "SELECT id FROM jobs WHERE state = 'done'"
                " AND json_extract(delivery, '$.message_id') = ? LIMIT 1",
                (message_id,),
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    def starboard_entry(self, message_id: str) -> StarboardEntry | None:
        """Return a starred message's row, or None."""
        row = (
            self.db.connection()
            .execute("SELECT * FROM starboard WHERE message_id = ?", (message_id,))
            .fetchone()
        )
        return StarboardEntry(**dict(row)) if row else None

    def add_starboard_entry(self, message_id: str, image_id: str, channel_id: str) -> None:
        """Remember a starred result message (a second call keeps the first row)."""

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO starboard (message_id, image_id, channel_id)"
                " VALUES (?, ?, ?)",
                (message_id, image_id, channel_id),
            )

        self.db.transaction(add)

    def set_stars(self, message_id: str, stars: int) -> None:
        """Record how many stars that count a message has."""

        def change(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE starboard SET stars = ? WHERE message_id = ?", (stars, message_id))

        self.db.transaction(change)

    def claim_starboard_post(self, message_id: str, at: float, stale_before: float) -> bool:
        """Claim a message's repost; False when it is posted or claimed since `stale_before`."""

        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE starboard SET posted_message_id = ?, posted_at = ? WHERE message_id = ?"
                " AND (posted_message_id IS NULL"
                " OR (posted_message_id = ? AND posted_at < ?))",
                (POSTING, at, message_id, POSTING, stale_before),
            )
            return cursor.rowcount == 1

        return self.db.transaction(claim)

    def finish_starboard_post(self, message_id: str, posted_message_id: str, at: float) -> None:
        """Record the repost's message id (the end of a claim)."""

        def finish(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE starboard SET posted_message_id = ?, posted_at = ? WHERE message_id = ?",
                (posted_message_id, at, message_id),
            )

        self.db.transaction(finish)

    def release_starboard_post(self, message_id: str) -> None:
        """Give a claim back after a failed post, so the next star tries again."""

        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE starboard SET posted_message_id = NULL, posted_at = NULL"
                " WHERE message_id = ? AND posted_message_id = ?",
                (message_id, POSTING),
            )

        self.db.transaction(release)
