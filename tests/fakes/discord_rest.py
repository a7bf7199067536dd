"""The REST half of the fake Discord: API v10 routes, call recording and fault injection."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

from . import discord_limits as limits
from .discord_oauth import OAuth
from .discord_world import (
    EPHEMERAL,
    LOADING,
    Call,
    FakeAttachment,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeUser,
    Fault,
    Log,
    Snowflakes,
    UploadedFile,
    World,
)

API_PREFIX = "/api/v10"
RECORDED_HEADERS = ("Authorization", "Content-Type", "User-Agent", "X-Audit-Log-Reason")
Handler = Callable[[Call, dict[str, str]], Awaitable[web.StreamResponse]]
ReactionListener = Callable[[FakeMessage, FakeUser, str, bool], Awaitable[None]]


@dataclass
class Settings:
    """Behaviour knobs shared by the REST and gateway halves."""

    token: str
    token_lifetime_s: float
    callback_deadline_s: float | None
    attachment_size_limit: int
    clock: Callable[[], float]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None):
    """Answer JSON with exactly `application/json`: discord.py parses nothing else."""
    all_headers = {hdrs.CONTENT_TYPE: "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def error(status: int, code: int, message: str, errors: dict[str, Any] | None = None):
    body: dict[str, Any] = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return json_response(body, status)


def form_error(field: str, code: str, message: str) -> web.Response:
    errors = {field: {"_errors": [{"code": code, "message": message}]}}
    return error(400, 50035, "Invalid Form Body", errors)


def no_content() -> web.Response:
    return web.Response(status=204)


def ratelimit_headers(bucket: str, remaining: int, reset_after_s: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after_s:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after_s:.3f}",
        "X-RateLimit-Bucket": bucket,
    }


INVALID_TOKEN = (401, 50027, "Invalid Webhook Token")
UNKNOWN_INTERACTION = (404, 10062, "Unknown interaction")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")


class RestApi:
    """Serve Discord's REST routes from in-memory state and record every call."""

    def __init__(self, world: World, settings: Settings, snowflakes: Snowflakes) -> None:
        self.world = world
        self.settings = settings
        self.snowflakes = snowflakes
        self.origin = ""
        self.gateway_url = ""
        self.calls: Log[Call] = Log("call")
        self.faults: list[Fault] = []
        self.messages: dict[int, FakeMessage] = {}
        # (channel id, nonce) → message id: Discord returns the first message for a repeated
        # nonce when enforce_nonce is set, instead of posting it twice.
        self.nonces: dict[tuple[int, str], int] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.dm_channels: dict[int, int] = {}
        # Users who turned off DMs from server members: a bot's DM to them is 403 50007.
        self.closed_dms: set[int] = set()
        # Sign in with Discord: /oauth2/authorize, the token route and bearer-token reads.
        self.oauth = OAuth(world)
        # Set by FakeDiscord: sends MESSAGE_REACTION_ADD/REMOVE for a reaction the bot made.
        self.on_reaction: ReactionListener | None = None
        app = r"(?P<app>\d+)"
        token = r"(?P<token>[^/]+)"
        channel = r"/channels/(?P<channel>\d+)"
        hook_message = rf"/webhooks/{app}/{token}/messages/(?P<message>@original|\d+)"
        reaction = rf"{channel}/messages/(?P<message>\d+)/reactions/(?P<emoji>[^/]+)"
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/gateway/bot", self.get_gateway_bot),
            ("GET", "/gateway", self.get_gateway_bot),
            ("GET", "/users/@me", self.get_me),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("PUT", f"/applications/{app}/commands", self.put_commands),
            ("GET", f"/applications/{app}/commands", self.get_commands),
            ("PUT", rf"/applications/{app}/guilds/(?P<guild>\d+)/commands", self.put_commands),
            ("GET", rf"/applications/{app}/guilds/(?P<guild>\d+)/commands", self.get_commands),
            ("POST", rf"/interactions/(?P<interaction>\d+)/{token}/callback", self.callback),
            ("GET", hook_message, self.hook_get),
            ("PATCH", hook_message, self.hook_edit),
            ("DELETE", hook_message, self.hook_del),
            ("POST", rf"/webhooks/{app}/{token}", self.followup),
            ("GET", channel, self.get_channel),
            ("POST", f"{channel}/typing", self.typing),
            ("GET", f"{channel}/messages", self.list_messages),
            ("POST", f"{channel}/messages", self.create_message),
            ("GET", rf"{channel}/messages/(?P<message>\d+)", self.get_message),
            ("PATCH", rf"{channel}/messages/(?P<message>\d+)", self.edit_message),
            ("DELETE", rf"{channel}/messages/(?P<message>\d+)", self.delete_message),
            ("PUT", rf"{reaction}/@me", self.add_own_reaction),
            ("DELETE", rf"{reaction}/@me", self.remove_own_reaction),
            ("GET", reaction, self.reaction_users),
            ("GET", r"/guilds/(?P<guild>\d+)", self.get_guild),
            ("GET", r"/guilds/(?P<guild>\d+)/channels", self.get_guild_channels),
            ("GET", r"/guilds/(?P<guild>\d+)/roles", self.get_guild_roles),
            ("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self.get_member),
            ("GET", r"/users/(?P<user>\d+)", self.get_user),
            ("POST", "/users/@me/channels", self.open_dm),
        ]
        self.routes = [(m, re.compile(f"^{p}$"), p, h) for m, p, h in table]

    # -- plumbing ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Record the request, apply a planned fault if one matches, else route it."""
        call = await self._record(request)
        try:
            response = await self._answer(request, call)
        except Exception:
            call.status = 500
            self.calls.append(call)
            raise
        call.status = 0 if call.fault == "reset" else response.status
        self.calls.append(call)
        return response

    async def _answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        if call.path.startswith("/attachments/"):
            return self._serve_attachment(call)
        signed_in = await self.oauth.handle(request, call)
        if signed_in is not None:
            return signed_in
        if not call.path.startswith(API_PREFIX):
            return error(404, 0, "404: Not Found")
        path = call.path.removeprefix(API_PREFIX)
        fault = next((f for f in self.faults if f.matches(call.method, path)), None)
        if fault is not None:
            return self._inject(request, call, fault)
        for method, pattern, template, handler in self.routes:
            match = pattern.match(path)
            if method == call.method and match:
                call.route = f"{method} {template}"
                if self._needs_bot_auth(path) and not self._is_authorised(call):
                    return error(401, 0, "401: Unauthorized")
                response = await handler(call, match.groupdict())
                response.headers.update(ratelimit_headers(template, 4, 1.0))
                return response
        return error(404, 0, "404: Not Found")

    async def _record(self, request: web.Request) -> Call:
        payload, files = await _read_body(request)
        headers = {k: request.headers[k] for k in RECORDED_HEADERS if k in request.headers}
        query = dict(request.query)
        return Call(request.method, request.path, query, payload, files, headers, time.time())

    def _needs_bot_auth(self, path: str) -> bool:
        return not path.startswith(("/webhooks/", "/interactions/"))

    def _is_authorised(self, call: Call) -> bool:
        return call.headers.get("Authorization") == f"Bot {self.settings.token}"

    def _inject(self, request: web.Request, call: Call, fault: Fault) -> web.StreamResponse:
        fault.remaining -= 1
        call.fault = str(fault.status)
        if fault.status == "reset":
            _reset_connection(request)
            return web.Response(status=500)  # Never reaches the client.
        status = int(fault.status)
        if status != 429:
            return error(status, 0, f"{status}: injected server error")
        scope = "global" if fault.is_global else "user"
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(fault.retry_after_s))),
            "X-RateLimit-Scope": scope,
            **ratelimit_headers(call.path, 0, fault.retry_after_s),
        }
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": fault.retry_after_s,
            "global": fault.is_global,
            "code": 0,
        }
        return json_response(body, 429, headers)

    def _serve_attachment(self, call: Call) -> web.Response:
        parts = call.path.split("/")
        attachment = self.attachments.get(int(parts[3])) if len(parts) > 3 else None
        if attachment is None:
            return error(404, 0, "404: Not Found")
        call.route = "GET /attachments/{channel}/{id}/{filename}"
        content_type = attachment.content_type or "application/octet-stream"
        return web.Response(body=attachment.data, headers={hdrs.CONTENT_TYPE: content_type})

    # -- messages ---------------------------------------------------------------------------

    def new_message(self, channel_id: int, guild_id: int | None, **fields: Any) -> FakeMessage:
        author = fields.pop("author", self.world.bot)
        fields.setdefault("bot_id", self.world.bot.id)
        message = FakeMessage(self.snowflakes.next(), channel_id, guild_id, author, **fields)
        self.messages[message.id] = message
        return message

    def store_attachment(self, channel_id: int, upload: UploadedFile, spec: dict[str, Any]):
        """Keep an uploaded file; its bytes are served at the returned attachment's url."""
        attachment_id = self.snowflakes.next()
        filename = spec.get("filename") or upload.filename
        url = f"{self.origin}/attachments/{channel_id}/{attachment_id}/{filename}"
        content_type = upload.content_type
        if content_type in ("", "application/octet-stream"):
            content_type = _guess_content_type(filename)
        description = spec.get("description")
        attachment = FakeAttachment(attachment_id, filename, upload.data, url, content_type)
        attachment.description = description
        self.attachments[attachment_id] = attachment
        return attachment

    def apply(self, message: FakeMessage, payload: dict[str, Any], files, *, is_edit: bool):
        """Apply a create or edit payload (with its uploaded files) to a stored message."""
        if is_edit:
            message.history.append(message.payload())
            message.edited_at = time.time()
        for key in ("embeds", "components"):
            if key in payload:
                setattr(message, key, payload[key] or [])
        if "content" in payload:
            message.content = payload["content"] or ""
        if "allowed_mentions" in payload:
            message.allowed_mentions = payload["allowed_mentions"]
        if "flags" in payload:
            kept = message.flags & EPHEMERAL if is_edit else 0
            message.flags = kept | (int(payload["flags"] or 0) & ~LOADING)
        if is_edit:
            message.flags &= ~LOADING
        message.attachments = self._attachments(message, payload.get("attachments"), files)

    def _attachments(self, message: FakeMessage, spec, files: list[UploadedFile]):
        if spec is None:
            new = [self.store_attachment(message.channel_id, f, {}) for f in files]
            return [*message.attachments, *new]
        existing = {a.id: a for a in message.attachments}
        uploads = {f.field: f for f in files}
        result = []
        for entry in spec:
            attachment_id = int(entry["id"])
            if attachment_id in existing:
                result.append(existing[attachment_id])
            elif f"files[{attachment_id}]" in uploads:
                upload = uploads[f"files[{attachment_id}]"]
                result.append(self.store_attachment(message.channel_id, upload, entry))
        return result

    def invalid(self, payload: dict[str, Any], files, *, is_create: bool):
        """Refuse what Discord refuses: Discord's documented limits, too big, empty."""
        if sum(len(f.data) for f in files) > self.settings.attachment_size_limit:
            return error(413, 40005, "Request entity too large")
        problem = limits.message_problem(payload, len(files))
        if problem is not None:
            return form_error(problem[0], "BASE_TYPE_BAD_LENGTH", problem[1])
        content = payload.get("content") or ""
        parts = ("embeds", "components", "sticker_ids", "poll")
        is_empty = not content and not files and not any(payload.get(p) for p in parts)
        if is_create and is_empty:
            return error(400, 50006, "Cannot send an empty message")
        return None

    # -- interactions -----------------------------------------------------------------------

    def interaction_for(self, token: str) -> tuple[FakeInteraction | None, web.Response | None]:
        interaction = self.interactions.get(token)
        if interaction is None or self.is_expired(interaction):
            return None, error(*INVALID_TOKEN)
        return interaction, None

    def is_expired(self, interaction: FakeInteraction) -> bool:
        age_s = self.settings.clock() - interaction.created_at
        return interaction.is_expired or age_s >= self.settings.token_lifetime_s

    async def callback(self, call: Call, params: dict[str, str]) -> web.Response:
        interaction, refusal = self.interaction_for(params["token"])
        if interaction is None or refusal is not None:
            return refusal or error(*INVALID_TOKEN)
        if interaction.id != int(params["interaction"]):
            return error(*UNKNOWN_INTERACTION)
        deadline_s = self.settings.callback_deadline_s
        if deadline_s is not None and self.settings.clock() - interaction.created_at > deadline_s:
            return error(*UNKNOWN_INTERACTION)
        if interaction.callback_type is not None:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body = call.json or {}
        kind, data = int(body.get("type", 0)), body.get("data") or {}
        refusal = self._respond(interaction, kind, data, call.files)
        if refusal is not None:
            return refusal
        interaction.callback_type, interaction.callback_data = kind, data
        if call.query.get("with_response") not in ("1", "true", "True"):
            return no_content()
        return json_response(self._callback_body(interaction, kind))

    def _respond(self, interaction: FakeInteraction, kind: int, data, files):
        if kind in (4, 7):
            refusal = self.invalid(data, files, is_create=kind == 4)
            if refusal is not None:
                return refusal
        if kind in (4, 5):
            flags = LOADING if kind == 5 else 0
            flags |= int(data.get("flags") or 0) & EPHEMERAL
            message = self.new_message(
                interaction.channel_id,
                interaction.guild_id,
                webhook_id=interaction.application_id,
                interaction_id=interaction.id,
                type=20 if interaction.type == 2 else 19,
            )
            self.apply(message, data if kind == 4 else {}, files, is_edit=False)
            message.flags |= flags
            interaction.original_message_id = message.id
        elif kind in (6, 7):
            target = self.messages.get(interaction.message_id or 0)
            if target is None:
                return error(400, 40004, "Interaction has no message to update")
            if kind == 7:
                self.apply(target, data, files, is_edit=True)
            interaction.original_message_id = target.id
        elif kind == 8:
            return _invalid_choices(interaction, data)
        elif kind == 9:
            problem = limits.modal_problem(data)
            if problem is not None:
                return form_error(problem[0], "BASE_TYPE_BAD_LENGTH", problem[1])
            if interaction.type in (4, 5):
                return error(400, 50035, "A modal cannot answer a modal submit or an autocomplete")
        elif kind not in (1, 9, 10, 12):
            return form_error("type", "BASE_TYPE_CHOICES", f"Value {kind} is not a valid type.")
        return None

    def _callback_body(self, interaction: FakeInteraction, kind: int) -> dict[str, Any]:
        original = self.messages.get(interaction.original_message_id or 0)
        summary: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        resource: dict[str, Any] = {"type": kind}
        if original is not None and kind in (4, 5, 7):
            summary["response_message_id"] = str(original.id)
            summary["response_message_loading"] = original.is_loading
            summary["response_message_ephemeral"] = original.is_ephemeral
            resource["message"] = original.payload()
        return {"interaction": summary, "resource": resource}

    def _hook_message(self, params: dict[str, str]):
        interaction, refusal = self.interaction_for(params["token"])
        if interaction is None or refusal is not None:
            return None, refusal
        if interaction.application_id != int(params["app"]):
            return None, error(404, 10015, "Unknown Webhook")
        wanted = params["message"]
        is_original = wanted == "@original"
        message_id = (interaction.original_message_id or 0) if is_original else int(wanted)
        own = [interaction.original_message_id, *interaction.followup_ids]
        message = self.messages.get(message_id)
        if message is None or message.is_deleted or message_id not in own:
            return None, error(*UNKNOWN_MESSAGE)
        return message, None

    async def hook_get(self, call: Call, params: dict[str, str]) -> web.Response:
        message, refusal = self._hook_message(params)
        if message is None or refusal is not None:
            return refusal or error(*UNKNOWN_MESSAGE)
        return json_response(message.payload())

    def _edit(self, message: FakeMessage, call: Call) -> web.Response:
        payload = call.json or {}
        refusal = self.invalid(payload, call.files, is_create=False)
        if refusal is not None:
            return refusal
        self.apply(message, payload, call.files, is_edit=True)
        return json_response(message.payload())

    async def hook_edit(self, call: Call, params: dict[str, str]) -> web.Response:
        message, refusal = self._hook_message(params)
        if message is None or refusal is not None:
            return refusal or error(*UNKNOWN_MESSAGE)
        return self._edit(message, call)

    async def hook_del(self, call: Call, params: dict[str, str]) -> web.Response:
        message, refusal = self._hook_message(params)
        if message is None or refusal is not None:
            return refusal or error(*UNKNOWN_MESSAGE)
        message.is_deleted = True
        return no_content()

    async def followup(self, call: Call, params: dict[str, str]) -> web.Response:
        interaction, refusal = self.interaction_for(params["token"])
        if interaction is None or refusal is not None:
            return refusal or error(*INVALID_TOKEN)
        if interaction.callback_type is None:
            return error(404, 10015, "Unknown Webhook")
        payload = call.json or {}
        refusal = self.invalid(payload, call.files, is_create=True)
        if refusal is not None:
            return refusal
        original = self.messages.get(interaction.original_message_id or 0)
        if original is not None and original.is_loading:
            # Discord turns the first follow-up after a deferral into the deferred message,
            # keeping the deferral's ephemeral flag and not marking it edited.
            self.apply(original, payload, call.files, is_edit=True)
            original.edited_at = None
            message = original
        else:
            message = self.new_message(
                interaction.channel_id,
                interaction.guild_id,
                webhook_id=interaction.application_id,
                interaction_id=interaction.id,
            )
            self.apply(message, payload, call.files, is_edit=False)
            interaction.followup_ids.append(message.id)
        if call.query.get("wait") not in ("1", "true", "True"):
            return no_content()
        return json_response(message.payload())

    # -- bot routes -------------------------------------------------------------------------

    async def get_gateway_bot(self, call: Call, params: dict[str, str]) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def get_me(self, call: Call, params: dict[str, str]) -> web.Response:
        me = {**self.world.bot.payload(), "verified": True, "mfa_enabled": False}
        return json_response(me)

    async def get_application(self, call: Call, params: dict[str, str]) -> web.Response:
        guild = self.world.guilds[0] if self.world.guilds else None
        owner = self.world.user(guild.owner_id) if guild else None
        return json_response(
            {
                "id": str(self.world.bot.id),
                "name": self.world.bot.name,
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": (owner or self.world.bot).payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.world.guilds),
                "bot": self.world.bot.payload(),
            }
        )

    async def put_commands(self, call: Call, params: dict[str, str]) -> web.Response:
        guild_id = int(params["guild"]) if params.get("guild") else None
        commands = call.json or []
        for index, command in enumerate(commands):
            problem = limits.command_problem(command)
            if problem is not None:
                field, reason = problem
                return form_error(f"{index}.{field}", "APPLICATION_COMMAND_INVALID", reason)
        old = {(c["name"], c.get("type", 1)): c["id"] for c in self.commands.get(guild_id, [])}
        stored = []
        for command in commands:
            kind = command.get("type", 1)
            command_id = old.get((command["name"], kind)) or str(self.snowflakes.next())
            stored.append(_command_record(command, command_id, params["app"], guild_id))
        self.commands[guild_id] = stored
        return json_response(stored)

    async def get_commands(self, call: Call, params: dict[str, str]) -> web.Response:
        guild_id = int(params["guild"]) if params.get("guild") else None
        return json_response(self.commands.get(guild_id, []))

    async def get_channel(self, call: Call, params: dict[str, str]) -> web.Response:
        guild, channel = self.world.find_channel(int(params["channel"]))
        if channel is None:
            return error(*UNKNOWN_CHANNEL)
        return json_response(channel.payload(guild.id if guild else None))

    async def typing(self, call: Call, params: dict[str, str]) -> web.Response:
        return no_content()

    async def list_messages(self, call: Call, params: dict[str, str]) -> web.Response:
        channel_id = int(params["channel"])
        limit = int(call.query.get("limit", "50"))
        found = [m for m in self.messages.values() if m.channel_id == channel_id]
        visible = [m for m in found if not m.is_deleted and not m.is_ephemeral]
        newest_first = sorted(visible, key=lambda m: m.id, reverse=True)[:limit]
        return json_response([m.payload() for m in newest_first])

    async def create_message(self, call: Call, params: dict[str, str]) -> web.Response:
        channel_id = int(params["channel"])
        guild, channel = self.world.find_channel(channel_id)
        is_dm = channel_id in self.dm_channels.values()
        if channel is None and not is_dm:
            return error(*UNKNOWN_CHANNEL)
        if is_dm and any(self.dm_channels.get(u) == channel_id for u in self.closed_dms):
            return error(403, 50007, "Cannot send messages to this user")
        payload = call.json or {}
        if guild is not None and channel is not None:
            bot_member = guild.member(self.world.bot.id) or FakeMember(self.world.bot)
            allowed = guild.permissions(bot_member, channel)
            needed = discord_permissions(send_messages=True, view_channel=True)
            if call.files:
                needed |= discord_permissions(attach_files=True)
            if allowed & needed != needed:
                return error(*MISSING_PERMISSIONS)
            if not allowed & discord_permissions(embed_links=True):
                payload = {**payload, "embeds": []}  # Discord drops embeds silently here.
        refusal = self.invalid(payload, call.files, is_create=True)
        if refusal is not None:
            return refusal
        nonce = (channel_id, str(payload["nonce"])) if payload.get("enforce_nonce") else None
        if nonce is not None and nonce in self.nonces:
            return json_response(self.messages[self.nonces[nonce]].payload())
        message = self.new_message(channel_id, guild.id if guild else None)
        self.apply(message, payload, call.files, is_edit=False)
        if nonce is not None:
            self.nonces[nonce] = message.id
        return json_response(message.payload())

    def _channel_message(self, params: dict[str, str]) -> FakeMessage | None:
        message = self.messages.get(int(params["message"]))
        if message is None or message.is_deleted:
            return None
        return message if message.channel_id == int(params["channel"]) else None

    async def get_message(self, call: Call, params: dict[str, str]) -> web.Response:
        message = self._channel_message(params)
        return json_response(message.payload()) if message else error(*UNKNOWN_MESSAGE)

    async def edit_message(self, call: Call, params: dict[str, str]) -> web.Response:
        message = self._channel_message(params)
        if message is None:
            return error(*UNKNOWN_MESSAGE)
        if message.author.id != self.world.bot.id:
            return error(403, 50005, "Cannot edit a message authored by another user")
        return self._edit(message, call)

    async def delete_message(self, call: Call, params: dict[str, str]) -> web.Response:
        message = self._channel_message(params)
        if message is None:
            return error(*UNKNOWN_MESSAGE)
        message.is_deleted = True
        return no_content()

    # -- reactions --------------------------------------------------------------------------

    def _reaction_refusal(self, message: FakeMessage, **needed: bool) -> web.Response | None:
        """Refuse what the bot's permissions in the message's channel do not allow."""
        guild, channel = self.world.find_channel(message.channel_id)
        if guild is None or channel is None:
            return None
        bot_member = guild.member(self.world.bot.id) or FakeMember(self.world.bot)
        wanted = discord_permissions(view_channel=True, read_message_history=True, **needed)
        if guild.permissions(bot_member, channel) & wanted != wanted:
            return error(*MISSING_PERMISSIONS)
        return None

    async def add_own_reaction(self, call: Call, params: dict[str, str]) -> web.Response:
        message = self._channel_message(params)
        if message is None:
            return error(*UNKNOWN_MESSAGE)
        emoji = params["emoji"]
        is_new_emoji = not message.reactions.get(emoji)
        refusal = self._reaction_refusal(message, add_reactions=is_new_emoji)
        if refusal is not None:
            return refusal
        if add_reaction(message, self.world.bot.id, emoji) and self.on_reaction is not None:
            await self.on_reaction(message, self.world.bot, emoji, True)
        return no_content()

    async def remove_own_reaction(self, call: Call, params: dict[str, str]) -> web.Response:
        message = self._channel_message(params)
        if message is None:
            return error(*UNKNOWN_MESSAGE)
        emoji = params["emoji"]
        if remove_reaction(message, self.world.bot.id, emoji) and self.on_reaction is not None:
            await self.on_reaction(message, self.world.bot, emoji, False)
        return no_content()

    async def reaction_users(self, call: Call, params: dict[str, str]) -> web.Response:
        """List who reacted with one emoji, by user id, `limit` (1–100, 25) after `after`."""
        message = self._channel_message(params)
        if message is None:
            return error(*UNKNOWN_MESSAGE)
        refusal = self._reaction_refusal(message)
        if refusal is not None:
            return refusal
        limit = int(call.query.get("limit", "25"))
        if not 1 <= limit <= 100:
            return form_error("limit", "NUMBER_TYPE_MAX", "limit: expected 1–100")
        after = int(call.query.get("after", "0"))
        ids = sorted(u for u in message.reactions.get(params["emoji"], []) if u > after)
        users = [self.world.user(u) for u in ids[:limit]]
        return json_response([u.payload() for u in users if u is not None])

    async def get_guild(self, call: Call, params: dict[str, str]) -> web.Response:
        guild = self.world.guild(int(params["guild"]))
        if guild is None:
            return error(404, 10004, "Unknown Guild")
        return json_response(guild.partial_payload())

    async def get_guild_channels(self, call: Call, params: dict[str, str]) -> web.Response:
        guild = self.world.guild(int(params["guild"]))
        if guild is None:
            return error(404, 10004, "Unknown Guild")
        return json_response([c.payload(guild.id) for c in guild.channels])

    async def get_guild_roles(self, call: Call, params: dict[str, str]) -> web.Response:
        guild = self.world.guild(int(params["guild"]))
        if guild is None:
            return error(404, 10004, "Unknown Guild")
        return json_response([r.payload() for r in guild.roles])

    async def get_member(self, call: Call, params: dict[str, str]) -> web.Response:
        guild = self.world.guild(int(params["guild"]))
        member = guild.member(int(params["user"])) if guild else None
        if member is None:
            return error(404, 10007, "Unknown Member")
        return json_response(member.payload())

    async def get_user(self, call: Call, params: dict[str, str]) -> web.Response:
        user = self.world.user(int(params["user"]))
        return json_response(user.payload()) if user else error(404, 10013, "Unknown User")

    async def open_dm(self, call: Call, params: dict[str, str]) -> web.Response:
        recipient_id = int((call.json or {}).get("recipient_id", 0))
        user = self.world.user(recipient_id)
        if user is None:
            return error(404, 10013, "Unknown User")
        channel_id = self.dm_channels.setdefault(user.id, self.snowflakes.next())
        channel = {"id": str(channel_id), "type": 1, "recipients": [user.payload()]}
        return json_response({**channel, "last_message_id": None, "flags": 0})


def add_reaction(message: FakeMessage, user_id: int, emoji: str) -> bool:
    """Add one user's reaction; False when they had already reacted with that emoji."""
    users = message.reactions.setdefault(emoji, [])
    if user_id in users:
        return False
    users.append(user_id)
    return True


def remove_reaction(message: FakeMessage, user_id: int, emoji: str) -> bool:
    """Remove one user's reaction; False when there was none."""
    users = message.reactions.get(emoji, [])
    if user_id not in users:
        return False
    users.remove(user_id)
    if not users:
        del message.reactions[emoji]
    return True


def discord_permissions(**flags: bool) -> int:
    import discord

    return discord.Permissions(**flags).value


async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await request.read()
    if not raw:
        return None, []
    if request.content_type == "application/json":
        return json.loads(raw), []
    return raw.decode(errors="replace"), []


async def _read_multipart(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    payload: Any = None
    files: list[UploadedFile] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue  # Discord requests never nest multiparts.
        data = await part.read()
        if part.name == "payload_json":
            payload = json.loads(data)
        elif part.filename is not None:
            content_type = part.headers.get(hdrs.CONTENT_TYPE, "")
            files.append(UploadedFile(part.name or "", part.filename, content_type, bytes(data)))
    return payload, files


def _reset_connection(request: web.Request) -> None:
    """Close the client's socket with a TCP reset and send no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _guess_content_type(filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower()
    known = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
    return known.get(suffix, "application/octet-stream")


def _command_record(command: dict[str, Any], command_id: str, app_id: str, guild_id: int | None):
    record = {
        "id": command_id,
        "application_id": app_id,
        "version": command_id,
        "type": 1,
        "description": "",
        "options": [],
        "default_member_permissions": None,
        "nsfw": False,
        **command,
    }
    if guild_id is not None:
        record["guild_id"] = str(guild_id)
    return record


def _invalid_choices(interaction: FakeInteraction, data: dict[str, Any]) -> web.Response | None:
    """Check an autocomplete answer as Discord does: at most 25 choices, names 1–100 chars."""
    if interaction.type != 4:
        return error(400, 40060, "Autocomplete results answer only autocomplete interactions")
    problem = limits.choices_problem("data.choices", data.get("choices"))
    if problem is not None:
        return form_error(problem[0], "BASE_TYPE_BAD_LENGTH", problem[1])
    return None
