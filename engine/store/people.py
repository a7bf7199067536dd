"""People's rows: personal API tokens (hashed at rest) and boards, made after signing in.

A token is stored only as its SHA-256 (it is 32 random bytes, so no salt or slow hash is
needed); the row keeps the requester it acts as. A revoked token is refused on its next use.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from engine.store.database import Database


@dataclass(frozen=True)
class ApiToken:
    """One personal API token (never the token itself)."""

    id: str
    user_key: str
    requester: str
    label: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def is_revoked(self) -> bool:
        """Return whether the token was revoked."""
        return self.revoked_at is not None


@dataclass(frozen=True)
class Board:
    """A named set of images one person keeps; public boards are seen by every visitor."""

    id: str
    owner_key: str
    name: str
    is_public: bool
    created_at: float
    size: int = 0


BOARD_COLUMNS = (
    "boards.id, boards.owner_key, boards.name, boards.is_public, boards.created_at,"
    " (SELECT COUNT(*) FROM board_images WHERE board_id = boards.id) AS size"
)


class PeopleRows:
    """The `api_tokens`, `boards` and `board_images` tables (mixed into Store)."""

    db: Database

    def insert_token(
        self, token_id: str, token_hash: str, user_key: str, requester: str, label: str, at: float
    ) -> None:
        """Store a new token's hash and the requester it acts as."""
        sql = (
            "INSERT INTO api_tokens (id, token_hash, user_key, requester, label, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        args = (token_id, token_hash, user_key, requester, label, at)
        self.db.transaction(lambda conn: conn.execute(sql, args))

    def token_by_hash(self, token_hash: str, at: float) -> ApiToken | None:
        """Return the live token with this hash (and note its use), or None."""

        def find(conn: sqlite3.Connection) -> ApiToken | None:
            row = conn.execute(
                "SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (at, row["id"]))
            return _token_of(row)

        return self.db.transaction(find)

    def tokens_of(self, user_key: str) -> list[ApiToken]:
        """Return one person's tokens, newest first (revoked ones too)."""
        rows = self.db.connection().execute(
            "SELECT * FROM api_tokens WHERE user_key = ? ORDER BY created_at DESC", (user_key,)
        )
        return [_token_of(row) for row in rows]

    def revoke_token(self, token_id: str, user_key: str, at: float) -> bool:
        """Revoke one of this person's tokens; return False when they hold no such live token."""

        def revoke(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE api_tokens SET revoked_at = ?"
                " WHERE id = ? AND user_key = ? AND revoked_at IS NULL",
                (at, token_id, user_key),
            )
            return cursor.rowcount == 1

        return self.db.transaction(revoke)

    def insert_board(self, board: Board) -> None:
        """Store a new, empty board."""
        sql = "INSERT INTO boards (id, owner_key, name, is_public, created_at) VALUES (?,?,?,?,?)"
        args = (board.id, board.owner_key, board.name, int(board.is_public), board.created_at)
        self.db.transaction(lambda conn: conn.execute(sql, args))

    def board(self, board_id: str) -> Board | None:
        """Return a board, or None."""
        row = (
            self.db.connection()
            .execute(f"SELECT {BOARD_COLUMNS} FROM boards WHERE id = ?", (board_id,))
            .fetchone()
        )
        return None if row is None else _board_of(row)

    def boards_of(self, owner_key: str) -> list[Board]:
        """Return one person's boards, newest first."""
        rows = self.db.connection().execute(
            f"SELECT {BOARD_COLUMNS} FROM boards WHERE owner_key = ? ORDER BY created_at DESC",
            (owner_key,),
        )
        return [_board_of(row) for row in rows]

    def update_board(
        self, board_id: str, owner_key: str, name: str | None, is_public: bool | None
    ) -> bool:
        """Rename a board or change who sees it; False unless `owner_key` owns it."""
        sets: list[str] = []
        args: list[object] = []
        if name is not None:
            sets.append("name = ?")
            args.append(name)
        if is_public is not None:
            sets.append("is_public = ?")
            args.append(int(is_public))
        if not sets:
            return self.board(board_id) is not None
        sql = f"UPDATE boards SET {', '.join(sets)} WHERE id = ? AND owner_key = ?"
        values = (*args, board_id, owner_key)
        return self.db.transaction(lambda conn: conn.execute(sql, values).rowcount == 1)

    def delete_board(self, board_id: str, owner_key: str) -> bool:
        """Delete a board (its images stay in the gallery); False unless `owner_key` owns it."""
        sql = "DELETE FROM boards WHERE id = ? AND owner_key = ?"
        return self.db.transaction(
            lambda conn: conn.execute(sql, (board_id, owner_key)).rowcount == 1
        )

    def set_on_board(
        self, board_id: str, owner_key: str, image_ids: list[str], is_on: bool, at: float
    ) -> bool:
        """Add or remove images (nothing is copied); False unless `owner_key` owns the board."""

        def change(conn: sqlite3.Connection) -> bool:
            owned = conn.execute(
                "SELECT 1 FROM boards WHERE id = ? AND owner_key = ?", (board_id, owner_key)
            ).fetchone()
            if owned is None:
                return False
            for image_id in image_ids:
                if is_on:
                    conn.execute(
                        "INSERT OR IGNORE INTO board_images SELECT ?, id, ? FROM images"
                        " WHERE id = ? AND is_deleted = 0",
                        (board_id, at, image_id),
                    )
                else:
                    conn.execute(
                        "DELETE FROM board_images WHERE board_id = ? AND image_id = ?",
                        (board_id, image_id),
                    )
            return True

        return self.db.transaction(change)

    def board_image_ids(self, board_id: str, limit: int) -> list[str]:
        """Return a board's image ids, last added first (deleted images left out)."""
        rows = self.db.connection().execute(
            "SELECT board_images.image_id FROM board_images JOIN images"
            " ON images.id = board_images.image_id AND images.is_deleted = 0"
            " WHERE board_id = ? ORDER BY added_at DESC, images.n DESC LIMIT ?",
            (board_id, limit),
        )
        return [str(row[0]) for row in rows]


def _board_of(row: sqlite3.Row) -> Board:
    return Board(
        id=row["id"],
        owner_key=row["owner_key"],
        name=row["name"],
        is_public=bool(row["is_public"]),
        created_at=row["created_at"],
        size=int(row["size"]),
    )


def _token_of(row: sqlite3.Row) -> ApiToken:
    return ApiToken(
        id=row["id"],
        user_key=row["user_key"],
        requester=row["requester"],
        label=row["label"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
