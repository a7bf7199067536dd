"""Preference rows: one person's `/settings` defaults, as JSON, by requester key."""

from __future__ import annotations

import json
from typing import Any

from engine.store.database import Database


class PreferenceRows:
    """The `preferences` table (mixed into Store)."""

    db: Database

    def preferences(self) -> dict[str, dict[str, Any]]:
        """Return everyone's stored defaults by requester key (read once, at start)."""
        rows = self.db.connection().execute("SELECT user_key, data FROM preferences").fetchall()
        found: dict[str, dict[str, Any]] = {}
        for key, data in rows:
            try:
                value = json.loads(data)
            except ValueError:
                continue
            if isinstance(value, dict):
                found[str(key)] = value
        return found

    def set_preferences(self, user_key: str, data: dict[str, Any] | None, at: float) -> None:
        """Store one person's defaults; None removes them (back to the server's)."""
        if data is None:
            sql, args = "DELETE FROM preferences WHERE user_key = ?", (user_key,)
        else:
            sql = (
                "INSERT INTO preferences (user_key, data, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(user_key) DO UPDATE SET data = excluded.data,"
                " updated_at = excluded.updated_at"
            )
            args = (user_key, json.dumps(data, sort_keys=True), at)  # type: ignore[assignment]
        self.db.transaction(lambda conn: conn.execute(sql, args))
