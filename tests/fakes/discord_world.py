"""What exists in the fake Discord (users, guilds, channels, roles) and what the bot has made.

Payload builders here follow the Discord API v10 object shapes that discord.py 2.7 parses.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import discord

DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
PRIVILEGED_INTENTS = discord.Intents(members=True, presences=True, message_content=True).value
ADMINISTRATOR = discord.Permissions(administrator=True).value
ALL_PERMISSIONS = discord.Permissions.all().value
MEMBER_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    add_reactions=True,
    use_external_emojis=True,
    use_application_commands=True,
).value
MODERATOR_PERMISSIONS = discord.Permissions(manage_messages=True, moderate_members=True).value
SEND_DENIED = discord.Permissions(send_messages=True, attach_files=True, embed_links=True).value
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

T = TypeVar("T")


def iso(timestamp_s: float) -> str:
    """Format a Unix time the way Discord does (ISO 8601, UTC)."""
    return datetime.datetime.fromtimestamp(timestamp_s, datetime.UTC).isoformat()


class Snowflakes:
    """Hand out increasing snowflake ids whose timestamps are now."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        elapsed_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (elapsed_ms << 22) | (next(self._counter) & 0x3FFFFF)


@dataclass
class FakeUser:
    """A Discord user."""

    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": None if self.bot else self.name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class FakeRole:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    name: str
    permissions: int = 0
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }


@dataclass
class FakeOverwrite:
    """A channel permission overwrite for a role (type 0) or a member (type 1)."""

    id: int
    type: int = 0
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        allow, deny = str(self.allow), str(self.deny)
        return {"id": str(self.id), "type": self.type, "allow": allow, "deny": deny}


@dataclass
class FakeChannel:
    """A guild text channel (type 0); `nsfw` marks it age-restricted."""

    id: int
    name: str
    nsfw: bool = False
    type: int = 0
    position: int = 0
    overwrites: list[FakeOverwrite] = field(default_factory=list)
    topic: str | None = None

    def payload(self, guild_id: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [o.payload() for o in self.overwrites],
            "nsfw": self.nsfw,
            "topic": self.topic,
            "parent_id": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data


@dataclass
class FakeMember:
    """A user's membership of a guild."""

    user: FakeUser
    role_ids: list[int] = field(default_factory=list)
    nick: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.role_ids],
            "nick": self.nick,
            "avatar": None,
            "joined_at": iso(time.time() - 86_400),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }


@dataclass
class FakeGuild:
    """A guild with its roles, channels and members (the bot's own member included)."""

    id: int
    name: str
    owner_id: int
    roles: list[FakeRole] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    members: list[FakeMember] = field(default_factory=list)

    def channel(self, channel_id: int) -> FakeChannel | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def member(self, user_id: int) -> FakeMember | None:
        return next((m for m in self.members if m.user.id == user_id), None)

    def role(self, role_id: int) -> FakeRole | None:
        return next((r for r in self.roles if r.id == role_id), None)

    def permissions(self, member: FakeMember, channel: FakeChannel | None) -> int:
        """Compute a member's permissions in a channel the way Discord does."""
        if member.user.id == self.owner_id:
            return ALL_PERMISSIONS
        everyone = self.role(self.id)
        value = everyone.permissions if everyone else 0
        for role_id in member.role_ids:
            role = self.role(role_id)
            value |= role.permissions if role else 0
        if value & ADMINISTRATOR:
            return ALL_PERMISSIONS
        if channel is None:
            return value
        overwrites = {o.id: o for o in channel.overwrites}
        if self.id in overwrites:
            value = (value & ~overwrites[self.id].deny) | overwrites[self.id].allow
        role_overwrites = [overwrites[r] for r in member.role_ids if r in overwrites]
        deny = 0
        allow = 0
        for overwrite in role_overwrites:
            deny |= overwrite.deny
            allow |= overwrite.allow
        value = (value & ~deny) | allow
        own = overwrites.get(member.user.id)
        if own is not None:
            value = (value & ~own.deny) | own.allow
        return value

    def payload(self) -> dict[str, Any]:
        """The GUILD_CREATE payload: everything, including channels and members."""
        return {
            **self.partial_payload(),
            "member_count": len(self.members),
            "members": [m.payload() for m in self.members],
            "channels": [c.payload(None) for c in self.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "large": False,
            "unavailable": False,
            "joined_at": iso(time.time() - 86_400),
        }

    def partial_payload(self) -> dict[str, Any]:
        """The GET /guilds/{id} payload: the guild and its roles."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "roles": [r.payload() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "features": [],
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "max_members": 500_000,
        }


@dataclass
class World:
    """Everyone and everything the fake knows; `default()` builds the usual test server."""

    bot: FakeUser
    guilds: list[FakeGuild]
    users: dict[str, FakeUser] = field(default_factory=dict)

    @classmethod
    def default(cls) -> World:
        """One guild: #general, age-restricted #nsfw-art, #locked (bot may not post), a mod role."""
        bot = FakeUser(100_000_000_000_000_001, "imagine", bot=True)
        owner = FakeUser(100_000_000_000_000_002, "owner")
        alice = FakeUser(100_000_000_000_000_003, "alice")
        bob = FakeUser(100_000_000_000_000_004, "bob")
        mod = FakeUser(100_000_000_000_000_005, "mod")
        guild_id = 200_000_000_000_000_001
        moderator = FakeRole(300_000_000_000_000_002, "Moderator", MODERATOR_PERMISSIONS, 2)
        bot_role = FakeRole(300_000_000_000_000_003, "imagine", MEMBER_PERMISSIONS, 3)
        locked = FakeOverwrite(bot_role.id, type=0, deny=SEND_DENIED)
        guild = FakeGuild(
            id=guild_id,
            name="Test Guild",
            owner_id=owner.id,
            roles=[FakeRole(guild_id, "@everyone", MEMBER_PERMISSIONS, 0), moderator, bot_role],
            channels=[
                FakeChannel(400_000_000_000_000_001, "general", position=0),
                FakeChannel(400_000_000_000_000_002, "nsfw-art", nsfw=True, position=1),
                FakeChannel(400_000_000_000_000_003, "locked", position=2, overwrites=[locked]),
            ],
            members=[
                FakeMember(bot, [bot_role.id]),
                FakeMember(owner),
                FakeMember(alice),
                FakeMember(bob),
                FakeMember(mod, [moderator.id]),
            ],
        )
        users = {u.name: u for u in (bot, owner, alice, bob, mod)}
        return cls(bot=bot, guilds=[guild], users=users)

    def guild(self, guild_id: int) -> FakeGuild | None:
        return next((g for g in self.guilds if g.id == guild_id), None)

    def find_channel(self, channel_id: int) -> tuple[FakeGuild | None, FakeChannel | None]:
        for guild in self.guilds:
            channel = guild.channel(channel_id)
            if channel is not None:
                return guild, channel
        return None, None

    def user(self, user_id: int) -> FakeUser | None:
        everyone = [*self.users.values(), *(m.user for g in self.guilds for m in g.members)]
        return next((u for u in everyone if u.id == user_id), None)


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class FakeAttachment:
    """A stored attachment; its bytes are served back at `url`."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.url,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.description:
            data["description"] = self.description
        return data


@dataclass
class FakeMessage:
    """A message as stored by the fake; `history` holds its payload before each edit."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None
    flags: int = 0
    type: int = 0
    webhook_id: int | None = None
    interaction_id: int | None = None
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None
    is_deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # emoji ("⭐", or "name:id" for a custom one) → the ids of the users who reacted, in order
    reactions: dict[str, list[int]] = field(default_factory=dict)
    bot_id: int = 0  # whose reactions are `me` in payloads (the REST half sets it)

    @property
    def is_ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def is_loading(self) -> bool:
        return bool(self.flags & LOADING)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        reactions = [self.reaction_payload(e) for e, users in self.reactions.items() if users]
        if reactions:
            data["reactions"] = reactions
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        return data

    def reaction_payload(self, emoji: str) -> dict[str, Any]:
        """One entry of a message's `reactions` (normal reactions only, no super reactions)."""
        users = self.reactions.get(emoji, [])
        return {
            "emoji": emoji_payload(emoji),
            "count": len(users),
            "count_details": {"burst": 0, "normal": len(users)},
            "me": self.bot_id in users,
            "me_burst": False,
            "burst_colors": [],
        }


def emoji_payload(emoji: str) -> dict[str, Any]:
    """Return the emoji object of a unicode emoji, or of a custom one written "name:id"."""
    name, _, emoji_id = emoji.partition(":")
    if emoji_id.isdigit():
        return {"id": emoji_id, "name": name, "animated": False}
    return {"id": None, "name": emoji}


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched; tests use it as the handle to its responses."""

    id: int
    token: str
    type: int
    application_id: int
    guild_id: int | None
    channel_id: int
    user: FakeUser
    created_at: float
    payload: dict[str, Any]
    message_id: int | None = None
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    is_expired: bool = False


@dataclass
class Call:
    """One HTTP request the fake received, and how it answered (status 0: connection reset)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    headers: dict[str, str]
    timestamp: float
    route: str | None = None
    status: int = 0
    fault: str | None = None

    def __str__(self) -> str:
        fault = f" [{self.fault}]" if self.fault else ""
        return f"{self.method} {self.path} -> {self.status}{fault}"


@dataclass
class Fault:
    """A planned failure for the next `remaining` requests matching `method` and `pattern`."""

    method: str
    pattern: re.Pattern[str]
    status: int | str
    remaining: int
    retry_after_s: float
    is_global: bool

    def matches(self, method: str, path: str) -> bool:
        is_method = self.method in ("*", method)
        return self.remaining > 0 and is_method and self.pattern.search(path) is not None


class Log(Generic[T]):
    """An append-only list that coroutines can wait on."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[T] = []
        self._waiters: list[asyncio.Future[None]] = []

    def append(self, item: T) -> None:
        self.items.append(item)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[T], bool], timeout_s: float, start: int = 0) -> T:
        """Return the first item from `start` on that matches, waiting up to `timeout_s`."""
        index = start
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for item in self.items[index:]:
                        if predicate(item):
                            return item
                    index = len(self.items)
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            recent = "\n  ".join(str(i) for i in self.items[-15:]) or "(none)"
            message = f"no matching {self.what} within {timeout_s}s; last ones:\n  {recent}"
            raise AssertionError(message) from None
