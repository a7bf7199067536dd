"""Serve the gallery from a thread beside the engine (the bot's process and `python -m web`)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import waitress
from flask import Flask

log = logging.getLogger(__name__)

WSGI_THREADS = 16


class GalleryServer:
    """The gallery app in a waitress server on its own thread."""

    def __init__(self, app: Flask, host: str, port: int, threads: int = WSGI_THREADS) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start serving; False (logged) when the port can't be bound."""
        try:
            self._server = waitress.create_server(
                self.app, host=self.host, port=self.port, threads=self.threads, ident="imagine"
            )
        except OSError as error:  # a busy port must not stop Discord
            log.error("gallery not started on %s:%d: %s", self.host, self.port, error)
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
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
