"""Live job pages: Server-Sent Events served on the gallery server's own event loop.

A watcher costs a coroutine here and one on the engine's loop, never a WSGI thread: sixteen
open tabs used to stop every page of the gallery. Watchers are bounded per client and in
total; past the bound the answer is 429 or 503 with `Retry-After`, and the page falls back to
refreshing itself. A comment every few seconds keeps proxies from closing a quiet stream and
tells us when the client went away.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from engine import (
    TERMINAL,
    Cancelled,
    EngineBridge,
    Event,
    Failed,
    Finished,
    NotFound,
    Progress,
    Queued,
    ShuttingDown,
    Started,
)
from web.security import HEADERS

log = logging.getLogger(__name__)

EVENTS_PATH = re.compile(r"/jobs/([0-9a-f]{1,32})/events")
HEARTBEAT_S = 15.0
RETRY_MS = 3000

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def event_json(event: Event) -> tuple[str, dict[str, Any]]:
    """Return an event's name and JSON-ready payload (previews as data URLs)."""
    if isinstance(event, Queued):
        return "queued", {"position": event.position, "eta_s": event.eta_s}
    if isinstance(event, Started):
        return "started", {}
    if isinstance(event, Progress):
        preview = None
        if event.preview_png:
            preview = "data:image/png;base64," + base64.b64encode(event.preview_png).decode()
        return "progress", {"step": event.step, "total": event.total, "preview": preview}
    if isinstance(event, Finished):
        images = [
            {"id": i.id, "page": f"/images/{i.id}", "file": f"/files/{i.id}.png"}
            for i in event.images
        ]
        return "done", {"images": images, "seconds": round(event.seconds, 2)}
    if isinstance(event, Failed):
        return "failed", {"error": event.reason}
    if isinstance(event, Cancelled):
        return "cancelled", {}
    return "unknown", {}


class EventStreams:
    """Serve `/jobs/<id>/events`, at most `per_client` streams each and `total` in all."""

    def __init__(self, bridge: EngineBridge, per_client: int, total: int) -> None:
        self.bridge = bridge
        self.per_client = per_client
        self.total = total
        self.loop: asyncio.AbstractEventLoop | None = None
        self._open: Counter[str] = Counter()
        self._ends: set[asyncio.Future[None]] = set()

    @property
    def open_count(self) -> int:
        """Return how many streams are open now."""
        return sum(self._open.values())

    async def serve(self, job_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one watcher: refuse past the bounds, else stream until the job ends."""
        self.loop = asyncio.get_running_loop()
        client = _client(scope)
        if self._open[client] >= self.per_client:
            await _refuse(send, 429, "too_many_streams", "You follow too many jobs at once.")
            return
        if self.open_count >= self.total:
            await _refuse(send, 503, "busy", "Too many live pages are open; this page refreshes.")
            return
        self._open[client] += 1
        try:
            await self._stream(job_id, receive, send)
        finally:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    async def _stream(self, job_id: str, receive: Receive, send: Send) -> None:
        inbox: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        try:
            watch = self.bridge.watch(job_id, asyncio.get_running_loop(), inbox.put_nowait)
        except ShuttingDown:
            await _refuse(send, 503, "shutting_down", "The server is restarting; try again.")
            return
        first = await inbox.get()
        if isinstance(first, NotFound):
            watch.cancel()
            await _refuse(send, 404, "not_found", "No such job.")
            return
        await send({"type": "http.response.start", "status": 200, "headers": _headers()})
        await _chunk(send, f"retry: {RETRY_MS}\n\n")
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ends.add(ended)
        listener = asyncio.ensure_future(_disconnected(receive, ended))
        try:
            await _pump(first, inbox, send, ended)
        finally:
            listener.cancel()
            watch.cancel()
            self._ends.discard(ended)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def end_all(self) -> None:
        """End every open stream (the server is stopping); their pages refresh themselves."""
        for ended in list(self._ends):
            if not ended.done():
                ended.set_result(None)


async def _pump(
    first: Event | BaseException | None,
    inbox: asyncio.Queue[Event | BaseException | None],
    send: Send,
    gone: asyncio.Future[None],
) -> None:
    """Send events until the job ends, the engine stops or the client leaves."""
    item = first
    while item is not None and not isinstance(item, BaseException):
        name, data = event_json(item)
        await _chunk(send, f"event: {name}\ndata: {json.dumps(data)}\n\n")
        if isinstance(item, TERMINAL):
            return
        item = await _next(inbox, send, gone)


async def _next(
    inbox: asyncio.Queue[Event | BaseException | None], send: Send, gone: asyncio.Future[None]
) -> Event | BaseException | None:
    """Wait for the next event, with a keep-alive comment every HEARTBEAT_S; None: client left."""
    while True:
        getter: asyncio.Future[Any] = asyncio.ensure_future(inbox.get())
        waiting: set[asyncio.Future[Any]] = {getter, gone}
        done, _ = await asyncio.wait(waiting, timeout=HEARTBEAT_S, return_when="FIRST_COMPLETED")
        if getter in done:
            return getter.result()
        getter.cancel()
        if gone in done:
            return None
        await _chunk(send, ": keep-alive\n\n")


async def _disconnected(receive: Receive, ended: asyncio.Future[None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not ended.done():
                ended.set_result(None)
            return


async def _chunk(send: Send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


def _headers() -> list[tuple[bytes, bytes]]:
    headers = {
        **HEADERS,
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    }
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": code, "message": message}).encode()
    headers = {**HEADERS, "Content-Type": "application/json", "Retry-After": "5"}
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
