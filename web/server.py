"""Serve the gallery beside the engine: uvicorn on its own thread and event loop.

Live job events are served natively on that loop (`web.streams`), so watchers cost no thread;
every other request goes to the Flask app on a pool of WSGI threads (a2wsgi). The bot's
process and `python -m web` both start it from their composition roots.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from a2wsgi import WSGIMiddleware
from flask import Flask

from engine import EngineBridge, WebSettings
from web.streams import EVENTS_PATH, EventStreams, Receive, Scope, Send

log = logging.getLogger(__name__)

WSGI_THREADS = 16
STOP_TIMEOUT_S = 10.0


class GalleryApp:
    """The ASGI app: `GET /jobs/<id>/events` on the loop, everything else to Flask."""

    def __init__(self, app: Flask, bridge: EngineBridge, web: WebSettings) -> None:
        self.flask = app
        self.wsgi = WSGIMiddleware(app, workers=WSGI_THREADS)  # type: ignore[arg-type]
        self.streams = EventStreams(bridge, web.max_streams_per_client, web.max_streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = EVENTS_PATH.fullmatch(scope["path"])
            if match is not None:
                await self.streams.serve(match.group(1), scope, receive, send)
                return
        if scope["type"] == "lifespan":
            return
        await self.wsgi(scope, receive, send)  # type: ignore[arg-type]


class GalleryServer:
    """The gallery in a uvicorn server on its own thread and loop."""

    def __init__(self, app: Flask, bridge: EngineBridge, web: WebSettings) -> None:
        self.asgi = GalleryApp(app, bridge, web)
        self.host = web.host
        self.port = web.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Bind and start serving; False (logged) when the port can't be bound."""
        config = uvicorn.Config(
            self.asgi,
            host=self.host,
            port=self.port,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        try:
            sock = _bind(self.host, self.port)
        except OSError as error:  # a busy port must not stop Discord
            log.error("gallery not started on %s:%d: %s", self.host, self.port, error)
            return False
        self.port = int(sock.getsockname()[1])
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="imagine-gallery", daemon=True
        )
        self._thread.start()
        return True

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            asyncio.run(self._server.serve(sockets=[sock]))
        except Exception:  # anything but a clean stop is a real fault
            log.exception("gallery server stopped")

    def stop(self) -> None:
        """Stop serving: end the open event streams, let requests in flight finish, then close."""
        server = self._server
        if server is not None:
            loop = self.asgi.streams.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self.asgi.streams.end_all)
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None
        self._server = None

    @property
    def open_streams(self) -> int:
        """Return how many live job pages are connected now."""
        return self.asgi.streams.open_count


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
