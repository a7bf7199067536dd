"""Bans: kept in memory for admission (no SQL on the loop), written through to the store."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from engine.errors import Banned, Forbidden
from engine.moderation import Moderator
from engine.offload import Offload
from engine.request import Requester
from engine.store import Ban, Store


class Bans:
    """Who may not generate, until when and why; moderators change it."""

    def __init__(self, store: Store, offload: Offload, clock: Callable[[], float]) -> None:
        self.store = store
        self.offload = offload
        self.clock = clock
        self._bans: dict[str, tuple[float | None, str]] = {}

    def load(self, bans: Iterable[Ban]) -> None:
        """Take the stored bans (at start)."""
        self._bans = {ban.user_key: (ban.until, ban.reason) for ban in bans}

    def check(self, requester: Requester) -> None:
        """Raise Banned while a ban on this requester lasts."""
        ban = self._bans.get(requester.key)
        if ban is None:
            return
        until, reason = ban
        if until is not None and until <= self.clock():
            return
        raise Banned(until=until, reason=reason)

    async def ban(
        self, user_key: str, until: float | None, reason: str, by: Requester, moderator: Moderator
    ) -> None:
        """Ban a requester key (e.g. `discord:1234`) until a time, or forever."""
        if not moderator.is_moderator(by):
            raise Forbidden("ban")
        now = self.clock()
        await self.offload.run(self.store.set_ban, user_key, until, reason, by.key, now)
        await self.offload.run(
            self.store.add_audit, "mod_ban", by.key, now, user_key, "", "", reason
        )
        self._bans[user_key] = (until, reason)

    async def unban(self, user_key: str, by: Requester, moderator: Moderator) -> bool:
        """Lift a ban; False when there was none."""
        if not moderator.is_moderator(by):
            raise Forbidden("unban")
        removed = await self.offload.run(self.store.remove_ban, user_key)
        await self.offload.run(self.store.add_audit, "mod_unban", by.key, self.clock(), user_key)
        self._bans.pop(user_key, None)
        return bool(removed)
