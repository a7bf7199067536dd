"""An in-process fake Discord (REST API v10 + gateway) for testing the real discord.py client.

Usage::

    async with FakeDiscord() as fake:          # serves on 127.0.0.1 and points discord.py at it
        bot = commands.Bot(..., guild_ready_timeout=0.05)
        task = asyncio.create_task(bot.start(fake.token))
        await asyncio.wait_for(bot.wait_until_ready(), 5)
        handle = await fake.send_slash_command(fake.guild.id, fake.text_channel.id,
                                               fake.user("alice"), "imagine", {"prompt": "a cat"})
        await fake.wait_for_call(lambda c: c.method == "PATCH" and "@original" in c.path)
        assert fake.original_response(handle.token).content == "..."
        await bot.close()                      # before the fake closes

Everything the bot sends is recorded in `fake.calls`; messages are kept with their attachments'
bytes and edit history. Faults are planned with `fail_next`, `expire_token`, `drop_gateway`
and `invalidate_session`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.endpoints import point_discord_py_at

from .discord_gateway import Gateway, GatewayEvent
from .discord_rest import API_PREFIX, RestApi, Settings, add_reaction, remove_reaction
from .discord_world import (
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    MEMBER_PERMISSIONS,
    PRIVILEGED_INTENTS,
    Call,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeOverwrite,
    FakeRole,
    FakeUser,
    Fault,
    Snowflakes,
    UploadedFile,
    World,
    emoji_payload,
)

__all__ = [
    "PRIVILEGED_INTENTS",
    "Call",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeOverwrite",
    "FakeRole",
    "FakeUpload",
    "FakeUser",
    "GatewayEvent",
    "World",
    "point_discord_py_at",
]

DEFAULT_TOKEN = "fake-bot-token"
GUILD_MESSAGE_REACTIONS = 1 << 10
DIRECT_MESSAGE_REACTIONS = 1 << 13
FAULT_STATUSES = {429, 500, 502, 503, 504, "reset"}


@dataclass
class FakeUpload:
    """A file a user attaches to a slash command option (type 11)."""

    filename: str
    data: bytes
    content_type: str = "image/png"


class FakeDiscord:
    """Serve a fake Discord on 127.0.0.1 (random port) for one test."""

    def __init__(
        self,
        world: World | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        heartbeat_interval_s: float = 1.0,
        token_lifetime_s: float = 15 * 60,
        callback_deadline_s: float | None = None,
        disallowed_intents: int = 0,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        application_flags: int = 0,
        clock: Callable[[], float] = time.monotonic,
        point_discord_py: bool = True,
    ) -> None:
        self.world = world or World.default()
        self.token = token
        self.settings = Settings(
            token, token_lifetime_s, callback_deadline_s, attachment_size_limit, clock
        )
        self.snowflakes = Snowflakes()
        self.rest = RestApi(self.world, self.settings, self.snowflakes)
        self.gateway = Gateway(
            self.world,
            self.settings,
            heartbeat_interval_s=heartbeat_interval_s,
            disallowed_intents=disallowed_intents,
            application_flags=application_flags,
        )
        self.rest.on_reaction = self._send_reaction
        self._should_point = point_discord_py
        self._restore: Callable[[], None] | None = None
        self._runner: web.AppRunner | None = None
        self.origin = ""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 and, unless told not to, point discord.py here."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway-resume", self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.origin = f"http://{host}:{port}"
        self.rest.origin = self.origin
        self.rest.gateway_url = self.gateway_url
        self.gateway.resume_url = f"ws://{host}:{port}/gateway-resume"
        if self._should_point:
            self._restore = point_discord_py_at(self.api_base, self.gateway_url)

    async def close(self) -> None:
        """Drop every connection, stop serving and undo the discord.py patch."""
        if self._restore is not None:
            self._restore()
            self._restore = None
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def api_base(self) -> str:
        return self.origin + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.origin.replace("http", "ws", 1) + "/gateway"

    # -- the default world ------------------------------------------------------------------

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot

    @property
    def application_id(self) -> int:
        return self.world.bot.id

    @property
    def guild(self) -> FakeGuild:
        return self.world.guilds[0]

    @property
    def text_channel(self) -> FakeChannel:
        return self.guild.channels[0]

    @property
    def nsfw_channel(self) -> FakeChannel:
        return next(c for c in self.guild.channels if c.nsfw)

    @property
    def locked_channel(self) -> FakeChannel:
        return next(c for c in self.guild.channels if c.name == "locked")

    @property
    def moderator_role(self) -> FakeRole:
        return next(r for r in self.guild.roles if r.name == "Moderator")

    def user(self, name: str) -> FakeUser:
        return self.world.users[name]

    # -- what the bot did -------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        return self.rest.calls.items

    @property
    def unknown_calls(self) -> list[Call]:
        """Calls no route served (the catch-all answered 404): a test should expect none."""
        return [c for c in self.calls if c.route is None and c.fault is None]

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.search(c.path)]

    async def wait_for_call(
        self, predicate: Callable[[Call], bool], timeout_s: float = 5.0, *, start: int = 0
    ) -> Call:
        """Return the first answered call (from index `start`) that matches."""
        return await self.rest.calls.wait_for(predicate, timeout_s, start)

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[FakeMessage]:
        """Messages in a channel, oldest first (ephemeral ones included)."""
        found = [m for m in self.rest.messages.values() if m.channel_id == channel_id]
        return [m for m in sorted(found, key=lambda m: m.id) if include_deleted or not m.is_deleted]

    def message(self, message_id: int) -> FakeMessage:
        return self.rest.messages[message_id]

    def interaction(self, token: str) -> FakeInteraction:
        return self.rest.interactions[token]

    def original_response(self, token: str) -> FakeMessage | None:
        message_id = self.interaction(token).original_message_id
        return self.rest.messages.get(message_id) if message_id else None

    def followups(self, token: str) -> list[FakeMessage]:
        """Follow-up messages; the first one after a deferral fills the original instead."""
        return [self.rest.messages[i] for i in self.interaction(token).followup_ids]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Application commands the bot has synced (globally, or to one guild)."""
        return self.rest.commands.get(guild_id, [])

    # -- faults -----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int | str,
        count: int = 1,
        retry_after: float = 0.05,
        global_: bool = False,
    ) -> None:
        """Fail the next `count` matching requests with 429, a 5xx, or "reset" (no response).

        `path_regex` is searched in the path after /api/v10, e.g. r"/messages/@original$";
        `method` may be "*". A 429 carries Via, X-RateLimit-* and a JSON `retry_after`.
        """
        if status not in FAULT_STATUSES:
            raise ValueError(f"status: expected one of {sorted(map(str, FAULT_STATUSES))}")
        pattern = re.compile(path_regex)
        self.rest.faults.append(Fault(method.upper(), pattern, status, count, retry_after, global_))

    def expire_token(self, token: str) -> None:
        """Make an interaction token invalid now (as after Discord's 15 minutes)."""
        self.interaction(token).is_expired = True

    async def drop_gateway(self, code: int | None = 1001) -> None:
        """Close the bot's gateway connection with `code`, or abruptly if None."""
        await self.gateway.drop(code)

    async def invalidate_session(self, resumable: bool) -> None:
        await self.gateway.invalidate(resumable)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        await self.gateway.reconnect()

    async def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Wait until the current session has been sent READY and every GUILD_CREATE.

        discord.py fires on_ready later (after `guild_ready_timeout`, 2 s by default).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self.gateway.is_ready.wait()
        except TimeoutError:
            raise AssertionError(f"the bot did not IDENTIFY within {timeout_s}s") from None

    async def wait_for_gateway(
        self, predicate: Callable[[GatewayEvent], bool], timeout_s: float = 5.0, *, start=0
    ) -> GatewayEvent:
        """Return the first gateway event (frames both ways, opens, closes) that matches."""
        return await self.gateway.log.wait_for(predicate, timeout_s, start)

    @property
    def gateway_events(self) -> list[GatewayEvent]:
        return self.gateway.log.items

    # -- driving the bot --------------------------------------------------------------------

    async def send_slash_command(
        self,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        name: str,
        options: dict[str, Any] | None = None,
        subcommand: str | None = None,
        *,
        app_permissions: int | None = None,
        member_permissions: int | None = None,
        roles: Sequence[FakeRole | int] | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch INTERACTION_CREATE for `/name [subcommand] options…`; return its handle.

        Option types come from the synced command when there is one, else from the values:
        str, int, float, bool, FakeUser, FakeRole, FakeChannel, FakeUpload.
        `subcommand` may be "sub" or "group sub". Permissions default to what the roles
        and the channel's overwrites give.
        """
        guild = self.world.guild(guild_id) if guild_id is not None else None
        data = self._command_data(guild, channel_id, name, options or {}, subcommand)
        return await self._dispatch_interaction(
            2, guild, channel_id, user, data, app_permissions, member_permissions, roles, locale
        )

    async def send_autocomplete(
        self,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        name: str,
        options: dict[str, Any],
        focused: str,
    ) -> FakeInteraction:
        """Dispatch APPLICATION_COMMAND_AUTOCOMPLETE for `/name` while `focused` is being typed."""
        guild = self.world.guild(guild_id) if guild_id is not None else None
        data = self._command_data(guild, channel_id, name, options, None)
        for option in data["options"]:
            if option["name"] == focused:
                option["focused"] = True
        return await self._dispatch_interaction(
            4, guild, channel_id, user, data, None, None, None, "en-US"
        )

    async def press_button(
        self,
        message_id: int,
        custom_id: str,
        user: FakeUser,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        app_permissions: int | None = None,
        member_permissions: int | None = None,
        roles: Sequence[FakeRole | int] | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT interaction (button, or select with `values`)."""
        message = self.rest.messages[message_id]
        guild = self.world.guild(message.guild_id) if message.guild_id else None
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return await self._dispatch_interaction(
            3,
            guild,
            message.channel_id,
            user,
            data,
            app_permissions,
            member_permissions,
            roles,
            locale,
            message,
        )

    def post_user_message(
        self,
        channel_id: int,
        user: FakeUser,
        content: str = "",
        uploads: Sequence[FakeUpload] = (),
    ) -> FakeMessage:
        """Store a message a user posted (with attached files), e.g. for a context menu."""
        guild, _ = self.world.find_channel(channel_id)
        message = self.rest.new_message(
            channel_id, guild.id if guild else None, author=user, content=content
        )
        for index, upload in enumerate(uploads):
            part = UploadedFile(
                f"files[{index}]", upload.filename, upload.content_type, upload.data
            )
            message.attachments.append(self.rest.store_attachment(channel_id, part, {}))
        return message

    async def send_message_command(
        self,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        name: str,
        message: FakeMessage,
        *,
        app_permissions: int | None = None,
        member_permissions: int | None = None,
        roles: Sequence[FakeRole | int] | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch a message context-menu command (type 3) on `message`; return its handle."""
        guild = self.world.guild(guild_id) if guild_id is not None else None
        record = self._find_command(guild_id, name, kind=3)
        data: dict[str, Any] = {
            "id": record["id"] if record else str(self.snowflakes.next()),
            "name": name,
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): message.payload()}},
        }
        if record is not None and record.get("guild_id"):
            data["guild_id"] = record["guild_id"]
        return await self._dispatch_interaction(
            2, guild, channel_id, user, data, app_permissions, member_permissions, roles, locale
        )

    async def submit_modal(
        self,
        handle: FakeInteraction,
        values: dict[str, str] | None = None,
        user: FakeUser | None = None,
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to `handle` (MODAL_SUBMIT, type 5).

        `values` maps text input custom ids to what the user typed; inputs left out keep the
        value the bot prefilled. Raises ValueError for what Discord's client would not let a
        user submit (an unknown input, a required one empty, a value past its lengths).
        """
        if handle.callback_type != 9 or handle.callback_data is None:
            raise AssertionError(f"interaction {handle.id} was not answered with a modal")
        modal = handle.callback_data
        rows = submitted_rows(modal.get("components") or [], dict(values or {}))
        data = {"custom_id": modal["custom_id"], "components": rows}
        message = self.rest.messages.get(handle.message_id or 0)
        guild = self.world.guild(handle.guild_id) if handle.guild_id is not None else None
        return await self._dispatch_interaction(
            5, guild, handle.channel_id, user or handle.user, data, None, None, None, "en-US",
            message,
        )  # fmt: skip

    async def react(self, message: FakeMessage, user: FakeUser, emoji: str = "⭐") -> bool:
        """Add a user's reaction to a message, as clicking it in Discord does.

        Sends MESSAGE_REACTION_ADD when the bot asked for the reactions intent; False (and no
        event) when the user had already reacted with that emoji.
        """
        if not add_reaction(message, user.id, emoji):
            return False
        await self._send_reaction(message, user, emoji, True)
        return True

    async def unreact(self, message: FakeMessage, user: FakeUser, emoji: str = "⭐") -> bool:
        """Take a user's reaction back; sends MESSAGE_REACTION_REMOVE (no member, no author)."""
        if not remove_reaction(message, user.id, emoji):
            return False
        await self._send_reaction(message, user, emoji, False)
        return True

    async def _send_reaction(
        self, message: FakeMessage, user: FakeUser, emoji: str, is_added: bool
    ) -> None:
        intent = GUILD_MESSAGE_REACTIONS if message.guild_id else DIRECT_MESSAGE_REACTIONS
        if not self.gateway.has_intent(intent):
            return
        payload: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        guild = self.world.guild(message.guild_id) if message.guild_id else None
        if guild is not None:
            payload["guild_id"] = str(guild.id)
        if is_added:
            payload["message_author_id"] = str(message.author.id)
            payload["burst_colors"] = []
            member = guild.member(user.id) if guild else None
            if member is not None:
                payload["member"] = member.payload()
        name = "MESSAGE_REACTION_ADD" if is_added else "MESSAGE_REACTION_REMOVE"
        await self.gateway.dispatch(name, payload)

    async def dispatch(self, name: str, payload: Any) -> int:
        """Send any gateway DISPATCH event in the current session; return its sequence."""
        return await self.gateway.dispatch(name, payload)

    async def _dispatch_interaction(
        self,
        kind: int,
        guild: FakeGuild | None,
        channel_id: int,
        user: FakeUser,
        data: dict[str, Any],
        app_permissions: int | None,
        member_permissions: int | None,
        roles: Sequence[FakeRole | int] | None,
        locale: str,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        interaction_id = self.snowflakes.next()
        token = "fake-" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.settings.attachment_size_limit,
        }
        if guild is None:
            payload.update(self._dm_fields(channel_id, user, app_permissions))
        else:
            fields = self._guild_fields(
                guild, channel_id, user, app_permissions, member_permissions, roles
            )
            payload.update(fields)
        if message is not None:
            payload["message"] = message.payload()
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=kind,
            application_id=self.application_id,
            guild_id=guild.id if guild else None,
            channel_id=channel_id,
            user=user,
            created_at=self.settings.clock(),
            payload=payload,
            message_id=message.id if message else None,
        )
        if message is not None:
            interaction.original_message_id = message.id
        self.rest.interactions[token] = interaction
        await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def _guild_fields(self, guild, channel_id, user, app_permissions, member_permissions, roles):
        channel = guild.channel(channel_id)
        if channel is None:
            raise ValueError(f"channel_id: {channel_id} is not a channel of guild {guild.id}")
        member = guild.member(user.id) or FakeMember(user)
        if roles is not None:
            role_ids = [r.id if isinstance(r, FakeRole) else int(r) for r in roles]
            member = FakeMember(user, role_ids, member.nick)
        if member_permissions is None:
            member_permissions = guild.permissions(member, channel)
        if app_permissions is None:
            bot_member = guild.member(self.bot_user.id) or FakeMember(self.bot_user)
            app_permissions = guild.permissions(bot_member, channel)
        return {
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(channel.id),
            "channel": {**channel.payload(guild.id), "permissions": str(member_permissions)},
            "member": {**member.payload(), "permissions": str(member_permissions)},
            "app_permissions": str(app_permissions),
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
        }

    def _dm_fields(self, channel_id: int, user: FakeUser, app_permissions: int | None):
        channel = {"id": str(channel_id), "type": 1, "recipients": [user.payload()], "flags": 0}
        permissions = MEMBER_PERMISSIONS if app_permissions is None else app_permissions
        return {
            "channel_id": str(channel_id),
            "channel": channel,
            "user": user.payload(),
            "app_permissions": str(permissions),
            "authorizing_integration_owners": {"0": "0"},
            "context": 1,
        }

    def _command_data(self, guild, channel_id, name, options, subcommand) -> dict[str, Any]:
        record = self._find_command(guild.id if guild else None, name)
        data: dict[str, Any] = {"id": str(self.snowflakes.next()), "name": name, "type": 1}
        definitions: list[dict[str, Any]] = []
        if record is not None:
            data["id"] = record["id"]
            definitions = record.get("options") or []
            if record.get("guild_id"):
                data["guild_id"] = record["guild_id"]
        path = subcommand.split() if subcommand else []
        for part in path:
            parent = next((d for d in definitions if d.get("name") == part), {})
            definitions = parent.get("options") or []
        resolved: dict[str, dict[str, Any]] = {}
        built = [
            self._option(key, value, definitions, resolved, guild, channel_id)
            for key, value in options.items()
        ]
        for depth, part in reversed(list(enumerate(path))):
            kind = 1 if depth == len(path) - 1 else 2
            built = [{"type": kind, "name": part, "options": built}]
        data["options"] = built
        if resolved:
            data["resolved"] = resolved
        return data

    def _find_command(
        self, guild_id: int | None, name: str, kind: int = 1
    ) -> dict[str, Any] | None:
        for scope in (guild_id, None):
            for record in self.rest.commands.get(scope, []):
                if record["name"] == name and record.get("type", 1) == kind:
                    return record
        return None

    def _option(self, name, value, definitions, resolved, guild, channel_id) -> dict[str, Any]:
        definition = next((d for d in definitions if d.get("name") == name), None)
        kind = definition["type"] if definition else _infer_option_type(value)
        if isinstance(value, FakeUser):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            member = guild.member(value.id) if guild else None
            if member is not None:
                permissions = str(guild.permissions(member, guild.channel(channel_id)))
                member_data = {**member.payload(), "permissions": permissions}
                del member_data["user"]
                resolved.setdefault("members", {})[str(value.id)] = member_data
            value = str(value.id)
        elif isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = value.payload()
            value = str(value.id)
        elif isinstance(value, FakeChannel):
            channel = {**value.payload(guild.id if guild else None), "permissions": "0"}
            resolved.setdefault("channels", {})[str(value.id)] = channel
            value = str(value.id)
        elif isinstance(value, FakeUpload):
            upload = UploadedFile("files[0]", value.filename, value.content_type, value.data)
            attachment = self.rest.store_attachment(channel_id, upload, {})
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
            value = str(attachment.id)
        return {"name": name, "type": kind, "value": value}


def submitted_rows(rows: list[dict[str, Any]], values: dict[str, str]) -> list[dict[str, Any]]:
    """Return a modal's components as Discord submits them, with the user's values."""
    submitted = []
    for row in rows:
        if row.get("type") == 18:  # a label wrapping one input
            field = _submitted_input(row["component"], values)
            submitted.append({"type": 18, "component": field})
        else:
            fields = [_submitted_input(c, values) for c in row.get("components") or []]
            submitted.append({"type": 1, "components": fields})
    if values:
        raise ValueError(f"values: the modal has no text input {sorted(values)}")
    return submitted


def _submitted_input(field: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    custom_id = field["custom_id"]
    value = values.pop(custom_id, field.get("value") or "")
    is_required = field.get("required", True)
    if is_required and not value:
        raise ValueError(f"{custom_id}: required, and left empty")
    low, high = int(field.get("min_length") or 0), int(field.get("max_length") or 4000)
    if value and not low <= len(value) <= high:
        raise ValueError(f"{custom_id}: {len(value)} characters, allowed {low}–{high}")
    return {"type": 4, "custom_id": custom_id, "value": value}


def _infer_option_type(value: Any) -> int:
    kinds: list[tuple[type, int]] = [
        (bool, 5),
        (int, 4),
        (float, 10),
        (str, 3),
        (FakeUser, 6),
        (FakeChannel, 7),
        (FakeRole, 8),
        (FakeUpload, 11),
    ]
    for python_type, kind in kinds:
        if isinstance(value, python_type):
            return kind
    raise TypeError(f"option value {value!r}: no Discord option type for {type(value).__name__}")
