"""Audit entries (rejected prompts, moderator actions) and bans."""

from __future__ import annotations

import sqlite3

from engine.store.database import Database
from engine.store.records import AuditEntry, Ban

AUDIT_TEXT_CHARS = 2000


class ModerationRows:
    """The `audit` and `bans` tables (mixed into Store)."""

    db: Database

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

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO audit (at, action, actor, target, rule, prompt, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    at,
                    action,
                    actor,
                    target,
                    rule,
                    prompt[:AUDIT_TEXT_CHARS],
                    detail[:AUDIT_TEXT_CHARS],
                ),
            )

        self.db.transaction(add)

    def audit(self, limit: int = 20, action: str | None = None) -> list[AuditEntry]:
        """Return the newest audit entries (of one action, or all)."""
        conn = self.db.connection()
        if action is None:
            rows = conn.execute("SELECT * FROM audit ORDER BY n DESC LIMIT ?", (limit,))
        else:
            rows = conn.execute(
                "SELECT * FROM audit WHERE action = ? ORDER BY n DESC LIMIT ?", (action, limit)
            )
        return [AuditEntry(**dict(row)) for row in rows]

    def set_ban(self, user_key: str, until: float | None, reason: str, by: str, at: float) -> None:
        """Ban a requester key (replacing any earlier ban)."""

        def ban(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?)",
                (user_key, until, reason, by, at),
            )

        self.db.transaction(ban)

    def remove_ban(self, user_key: str) -> bool:
        """Lift a ban; False when there was none."""

        def unban(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM bans WHERE user_key = ?", (user_key,)).rowcount == 1

        return self.db.transaction(unban)

    def bans(self) -> list[Ban]:
        """Return every ban."""
        return [Ban(**dict(row)) for row in self.db.connection().execute("SELECT * FROM bans")]
