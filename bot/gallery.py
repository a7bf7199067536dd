"""Serve the web gallery with waitress on a daemon thread beside the engine's loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from engine import Engine, EngineBridge, Settings

log = logging.getLogger(__name__)


class GalleryServer:
    """The gallery (web.create_app) in a waitress server thread; `None` app when web is missing."""

    def __init__(self, settings: Settings, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.engine = engine
        self.loop = loop
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Build the app and start serving; False (logged) when the gallery can't run."""
        try:
            from web import create_app
        except Exception as error:  # the web package is optional for the bot
            log.warning(
                "gallery not available (%s: %s); running without it", type(error).__name__, error
            )
            return False
        import waitress

        web = self.settings.web
        try:
            app = create_app(self.settings, EngineBridge(self.engine, self.loop), self.engine.store)
            self._server = waitress.create_server(
                app, host=web.host, port=web.port, threads=16
            )  # live job pages hold a thread each
        except Exception as error:  # a refused deployment or a busy port must not stop Discord
            log.error("gallery not started: %s: %s", type(error).__name__, error)
            return False
        self._thread = threading.Thread(target=self._serve, name="imagine-gallery", daemon=True)
        self._thread.start()
        return True

    def _serve(self) -> None:
        try:
            self._server.run()
        except Exception:  # the loop closes its sockets on stop; anything else is a real fault
            log.exception("gallery server stopped")

    def stop(self) -> None:
        """Stop serving (the thread is a daemon, so exit never waits on it)."""
        if self._server is not None:
            self._server.close()
            self._server = None
