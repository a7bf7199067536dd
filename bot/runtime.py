"""The `python -m bot` process: engine, gallery and Discord client, signals and exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import discord

from bot.client import ImagineBot
from bot.delivery import gallery_url
from bot.gallery import GalleryServer
from engine import (
    ConfigError,
    Engine,
    ModelUnavailable,
    Overrides,
    Settings,
    Store,
    load_settings,
    reload_settings,
)

log = logging.getLogger("bot")

EXIT_OK = 0
EXIT_FATAL = 2


def main(config_path: str | None, overrides: Overrides | None = None) -> int:
    """Load the config and run until SIGTERM/SIGINT; return the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(config_path, overrides=overrides)
    except ConfigError as error:
        return fatal(f"config error: {error}")
    return asyncio.run(Runtime(settings, config_path, overrides).run())


def fatal(line: str) -> int:
    """Print one clear line on stderr and return the exit code for it."""
    print(f"imagine: {line}", file=sys.stderr, flush=True)
    return EXIT_FATAL


class Runtime:
    """One process: config → store → engine → gallery → Discord client."""

    def __init__(
        self, settings: Settings, config_path: str | None, overrides: Overrides | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides
        self.engine = Engine(
            settings, Store(settings.engine.data_dir, settings.engine.busy_timeout_s)
        )
        self.client: ImagineBot | None = None
        self.gallery: GalleryServer | None = None
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
        note = ""
        if status.is_builtin_noise:
            note = " (tiny random model: images are noise; set engine.model to SD 2.1, see README)"
        elif status.is_demo:
            note = (
                " (the small demo model: it draws coloured shapes, e.g. 'a large red circle on a"
                " blue background'; for SD 2.1 copy config.example.toml to config.toml)"
            )
        log.info("model: %s on %s (%s)%s", status.model, status.device, status.dtype, note)
        log.info("data: %s", self.settings.data_path.resolve())

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def _start_gallery(self) -> None:
        if not self.settings.web.enabled:
            log.info("gallery: off (web.enabled = false)")
            return
        self.gallery = GalleryServer(self.settings, self.engine, asyncio.get_running_loop())
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
            self.engine.reload(result)
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
