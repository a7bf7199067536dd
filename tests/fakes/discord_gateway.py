"""The gateway half of the fake Discord: HELLO, IDENTIFY/READY, heartbeats, RESUME, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .discord_rest import Settings
from .discord_world import Log, World

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS = 0, 1, 2, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11
IGNORED_OPS = {3, 4}


@dataclass
class GatewayEvent:
    """One gateway frame or connection event: direction is 'in', 'out', 'open' or 'close'.

    A 'close' event's data is the close code the fake sent, else the one the client sent.
    """

    direction: str
    op: int | None = None
    name: str | None = None
    data: Any = None
    seq: int | None = None
    timestamp: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return f"{self.direction} op={self.op} t={self.name} s={self.seq}"


@dataclass
class Connection:
    """One websocket client; frames are zlib-stream compressed when the client asked."""

    ws: web.WebSocketResponse
    request: web.Request
    compressor: Any = None
    close_code: int | None = None

    async def close(self, code: int, reason: str) -> None:
        self.close_code = code
        await self.ws.close(code=code, message=reason.encode())

    async def send(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame)
        if self.compressor is None:
            await self.ws.send_str(text)
            return
        data = self.compressor.compress(text.encode()) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        await self.ws.send_bytes(data)


@dataclass
class Session:
    """A gateway session: its sequence and every dispatch, kept for RESUME replays."""

    id: str
    seq: int = 0
    events: list[tuple[int, str, Any]] = field(default_factory=list)
    connection: Connection | None = None
    is_resumable: bool = True
    intents: int = 0  # what the client asked for in IDENTIFY; RESUME keeps them


class Gateway:
    """Speak the Discord gateway protocol (v10, JSON) to discord.py over aiohttp websockets."""

    def __init__(
        self,
        world: World,
        settings: Settings,
        *,
        heartbeat_interval_s: float,
        disallowed_intents: int,
        application_flags: int,
    ) -> None:
        self.world = world
        self.settings = settings
        self.heartbeat_interval_s = heartbeat_interval_s
        self.disallowed_intents = disallowed_intents
        self.application_flags = application_flags
        self.resume_url = ""
        self.session: Session | None = None
        self.connections: list[Connection] = []
        self.log: Log[GatewayEvent] = Log("gateway event")
        self.is_ready = asyncio.Event()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one websocket connection until either side closes it."""
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        compressor = None
        if request.query.get("compress") == "zlib-stream":
            compressor = zlib.compressobj()
        connection = Connection(ws, request, compressor)
        self.connections.append(connection)
        self.log.append(GatewayEvent("open", data={"path": request.path, **request.query}))
        try:
            interval_ms = int(self.heartbeat_interval_s * 1000)
            await self._send(connection, HELLO, {"heartbeat_interval": interval_ms})
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._receive(connection, json.loads(message.data))
        finally:
            self.connections.remove(connection)
            if self.session is not None and self.session.connection is connection:
                self.session.connection = None
            code = connection.close_code or ws.close_code
            self.log.append(GatewayEvent("close", data=code))
        return ws

    async def _send(self, connection: Connection, op: int, data: Any, name=None, seq=None):
        self.log.append(GatewayEvent("out", op, name, data, seq))
        # On a dying connection the event stays in the session for a RESUME replay.
        with contextlib.suppress(ConnectionError):
            await connection.send({"op": op, "d": data, "s": seq, "t": name})

    async def _receive(self, connection: Connection, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        self.log.append(GatewayEvent("in", op, None, data))
        fields = data if isinstance(data, dict) else {}
        if op == HEARTBEAT:
            await self._send(connection, HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            await self._identify(connection, fields)
        elif op == RESUME:
            await self._resume(connection, fields)
        elif op == REQUEST_MEMBERS:
            await self._send_members(fields)
        elif op not in IGNORED_OPS:
            await connection.close(4001, "Unknown opcode.")

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self.settings.token:
            await connection.close(4004, "Authentication failed.")
            return
        if int(data.get("intents", 0)) & self.disallowed_intents:
            await connection.close(4014, "Disallowed intent(s).")
            return
        self.is_ready.clear()
        intents = int(data.get("intents", 0))
        self.session = Session(secrets.token_hex(16), connection=connection, intents=intents)
        await self.dispatch("READY", self._ready_payload())
        for guild in self.world.guilds:
            await self.dispatch("GUILD_CREATE", guild.payload())
        self.is_ready.set()

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> None:
        session = self.session
        is_same = session is not None and session.id == data.get("session_id")
        if data.get("token") != self.settings.token:
            await connection.close(4004, "Authentication failed.")
            return
        if session is None or not is_same or not session.is_resumable:
            await self._send(connection, INVALID_SESSION, False)
            return
        session.connection = connection
        last_seq = int(data.get("seq") or 0)
        for seq, name, payload in list(session.events):
            if seq > last_seq:
                await self._send(connection, DISPATCH, payload, name, seq)
        await self.dispatch("RESUMED", {"_trace": ["fake-gateway"]})

    async def _send_members(self, data: dict[str, Any]) -> None:
        guild = self.world.guild(int(data.get("guild_id", 0)))
        if guild is None:
            return
        chunk = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in guild.members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
            "presences": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    def _ready_payload(self) -> dict[str, Any]:
        assert self.session is not None
        bot = self.world.bot
        return {
            "v": 10,
            "user": {**bot.payload(), "verified": True, "mfa_enabled": False},
            "session_id": self.session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_url,
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.world.guilds],
            "application": {"id": str(bot.id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "_trace": ["fake-gateway"],
        }

    def has_intent(self, intent: int) -> bool:
        """Return whether the current session asked for an intent (e.g. 1 << 10)."""
        return self.session is not None and bool(self.session.intents & intent)

    async def dispatch(self, name: str, payload: Any) -> int:
        """Send a DISPATCH in the current session now, or on RESUME if disconnected."""
        session = self.session
        if session is None:
            raise RuntimeError("no gateway session: has the client identified yet?")
        session.seq += 1
        if name != "RESUMED":
            session.events.append((session.seq, name, payload))
        connection = session.connection
        if connection is not None and not connection.ws.closed:
            await self._send(connection, DISPATCH, payload, name, session.seq)
        return session.seq

    async def drop(self, code: int | None) -> None:
        """Close the current connection with `code`, or abruptly (no close frame) if None."""
        session = self.session
        if session is None or session.connection is None:
            return
        connection, session.connection = session.connection, None
        if code is None:
            transport = connection.request.transport
            if transport is not None:
                transport.abort()
            return
        await connection.close(code, "fake gateway drop")

    async def invalidate(self, is_resumable: bool) -> None:
        """Send INVALID_SESSION; a non-resumable session can no longer be resumed."""
        session = self.session
        if session is None or session.connection is None:
            raise RuntimeError("no connected gateway session to invalidate")
        session.is_resumable = is_resumable
        if not is_resumable:
            self.is_ready.clear()
        await self._send(session.connection, INVALID_SESSION, is_resumable)

    async def reconnect(self) -> None:
        """Ask the client to reconnect and resume (op 7)."""
        session = self.session
        if session is not None and session.connection is not None:
            await self._send(session.connection, RECONNECT, None)

    async def close(self) -> None:
        for connection in list(self.connections):
            transport = connection.request.transport
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)
