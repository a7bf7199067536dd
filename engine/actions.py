"""What moderators (and authors) do to the gallery and to people: delete, ban, unban, audit."""

from __future__ import annotations

from collections.abc import Callable

from engine.bans import Bans
from engine.derive import Derivations
from engine.errors import Blocked, Forbidden
from engine.moderation import Moderator
from engine.offload import Offload
from engine.request import Requester
from engine.runs import Counters
from engine.store import Store


class ModeratorActions:
    """Act with a moderator's rights (checked here, every time) and keep the audit log."""

    def __init__(
        self,
        store: Store,
        offload: Offload,
        bans: Bans,
        derivations: Derivations,
        counters: Counters,
        moderator: Callable[[], Moderator],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.offload = offload
        self.bans = bans
        self.derivations = derivations
        self.counters = counters
        self.moderator = moderator
        self.clock = clock

    async def delete_image(self, image_id: str, by: Requester) -> None:
        """Delete an image: its author's, or anyone's for a moderator."""
        record = await self.derivations.source(image_id)
        is_author = by.source == record.source and by.user_id == record.author_id
        if not is_author and not self.moderator().is_moderator(by):
            raise Forbidden("delete someone else's image")
        await self.offload.run(self.store.delete_image, image_id)
        if not is_author:
            self.audit("mod_delete", by.key, target=image_id, prompt=record.prompt)

    async def ban(self, user_key: str, until: float | None, reason: str, by: Requester) -> None:
        """Ban a requester key (e.g. `discord:1234`) until a time, or forever."""
        await self.bans.ban(user_key, until, reason, by, self.moderator())

    async def unban(self, user_key: str, by: Requester) -> bool:
        """Lift a ban; False when there was none."""
        return await self.bans.unban(user_key, by, self.moderator())

    def may_act_for(self, by: Requester, owner_key: str, target: str, prompt: str) -> None:
        """Raise Forbidden unless `by` owns the job or moderates (then it is audited)."""
        if by.key == owner_key:
            return
        if not self.moderator().is_moderator(by):
            raise Forbidden("cancel someone else's job")
        self.audit("mod_cancel", by.key, target=target, prompt=prompt)

    def blocked(self, requester: Requester, prompt: str, blocked: Blocked) -> None:
        """Count and audit a prompt that moderation refused."""
        self.counters.failures[f"blocked:{blocked.rule}"] += 1
        self.audit("rejected", requester.key, rule=blocked.rule, prompt=prompt, detail=blocked.term)

    def audit(self, action: str, actor: str, **fields: str) -> None:
        """Append an audit entry in the background."""
        self.offload.spawn(
            self.store.add_audit, action, actor, self.clock(), fields.get("target", ""),
            fields.get("rule", ""), fields.get("prompt", ""), fields.get("detail", ""),
        )  # fmt: skip
