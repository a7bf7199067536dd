"""The `python -m bot` process: engine, gallery and Discord client, signals and exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Protocol

import discord

from bot.client import ImagineBot
from bot.delivery import gallery_url
from engine import (
    ConfigError,
    Engine,
    EngineBridge,
    EngineError,
    ModelUnavailable,
    Overrides,
    Settings,
    reload_settings,
)

log = logging.getLogger("bot")

EXIT_OK = 0
EXIT_FATAL = 2


class Gallery(Protocol):
    """The web gallery as the runtime starts and stops it."""

    def start(self) -> bool:
        """Start serving; False when it can't."""

    def stop(self) -> None:
        """Stop serving."""


GalleryFactory = Callable[[EngineBridge], Gallery]


def _model_note(is_demo: bool, is_noise: bool) -> str:
    if is_noise:
        return " (tiny random model: images are noise; set engine.model to SD 2.1, see README)"
    if is_demo:
        return (
            " (the small demo model: it draws coloured shapes, e.g. 'a large red circle on a"
            " blue background'; for SD 2.1 copy config.example.toml to config.toml)"
        )
    return ""


def fatal(line: str) -> int:
    """Print one clear line on stderr and return the exit code for it."""
    print(f"imagine: {line}", file=sys.stderr, flush=True)
    return EXIT_FATAL


class Runtime:
    """One process: the engine, then the gallery, then the Discord client; signals; shutdown."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        make_gallery: GalleryFactory | None,
        config_path: str | None,
        overrides: Overrides | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.make_gallery = make_gallery
        self.config_path = config_path
        self.overrides = overrides
        self.client: ImagineBot | None = None
        self.gallery: Gallery | None = None
        self._stop = asyncio.Event()

    async def run(self) -> int:
        """Start everything, wait for a signal or a fatal Discord error, shut down cleanly."""
        try:
            await self.engine.start()
        except ModelUnavailable as error:
            return fatal(str(error))
        self._say_where()
        self._install_signals()
        self._start_gallery()
        problem = await self._run_discord()
        await self._shutdown()
        return EXIT_OK if problem is None else fatal(problem)

    def _say_where(self) -> None:
        status = self.engine.status()
        for model in status.models:
            spec = self.engine.registry.get(model.name)
            source = model.name if spec.is_builtin else spec.path  # the operator's own path
            where = ", ".join(model.workers) or (
                "remote workers as their boxes join" if self.engine.pool else "no worker"
            )
            device = f" on {status.device} ({status.dtype})" if status.device else ""
            log.info(
                "model: %s%s as %s%s, served by %s%s",
                source,
                device,
                model.name,
                " (default)" if model.is_default else "",
                where,
                _model_note(model.is_demo, model.is_noise),
            )
        log.info("data: %s", self.settings.data_path)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _start_gallery(self) -> None:
        if not self.settings.web.enabled or self.make_gallery is None:
            log.info("gallery: off (web.enabled = false)")
            return
        try:
            self.gallery = self.make_gallery(EngineBridge(self.engine, asyncio.get_running_loop()))
        except EngineError as error:  # a refused deployment must not stop Discord
            log.error("gallery not started: %s", error)
            return
        if self.gallery.start():
            log.info("gallery: %s", gallery_url(self.settings))

    async def _run_discord(self) -> str | None:
        """Run until stopped; return the fatal problem with Discord, if any."""
        token = self.settings.secrets.discord_token
        if not token:
            log.info("no %s set: running the engine and gallery only", self.settings.bot.token_env)
            await self._stop.wait()
            return None
        self.client = ImagineBot(self.settings, self.engine, self._reload_settings)
        connection = asyncio.create_task(self.client.start(token))
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connection.done():
            return None
        return self._discord_problem(connection)

    def _discord_problem(self, connection: asyncio.Task[None]) -> str:
        error = connection.exception()
        env = self.settings.bot.token_env
        if isinstance(error, discord.LoginFailure):
            return (
                f"Discord refused the bot token in {env}; copy a fresh one from the "
                "Developer Portal (Bot → Reset Token)"
            )
        if isinstance(error, discord.PrivilegedIntentsRequired):
            return (
                "Discord refused the gateway intents; imagine needs no privileged "
                "intents, so check the application in the Developer Portal"
            )
        if error is not None:
            return f"Discord connection failed: {type(error).__name__}"
        return "Discord connection ended"

    def reload(self) -> None:
        """Re-read the config (SIGHUP); a bad file keeps the old settings and logs why."""
        result = self.client.reload_config() if self.client else self._reload_settings()
        if isinstance(result, ConfigError):
            log.error("config not reloaded, keeping the old one: %s", result)
        else:
            log.info("config reloaded from %s", result.source or "defaults")

    def _reload_settings(self) -> Settings | ConfigError:
        result = reload_settings(self.config_path, self.overrides)
        if isinstance(result, Settings):
            try:
                self.engine.reload(result)  # refuses LoRAs that do not fit their models
            except ConfigError as error:
                return error
            self.settings = result
        return result

    async def _shutdown(self) -> None:
        log.info("shutting down")
        if self.client is not None:
            await self.client.close()
        if self.gallery is not None:
            # Before the engine: a web request in flight must get 503 from a closed server,
            # never a 500 from a closed engine.
            await asyncio.get_running_loop().run_in_executor(None, self.gallery.stop)
        await self.engine.close()
