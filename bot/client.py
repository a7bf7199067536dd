"""The Discord client: lifecycle, the one error path, and the flow from interaction to job.

Each feature is an extension with one Cog: `bot.imagine` (/imagine and the result buttons),
`bot.images` ("Imagine from this image", remix, zoom out, pan), `bot.queue` (/queue,
/cancel, /status), `bot.moderation` (/mod) and `bot.starboard` (⭐ reactions). They talk to
the engine through this client; every refusal goes through `replies.text_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, replies
from bot.delivery import NO_MENTIONS, Delivery, Target
from bot.endpoints import point_discord_py_at
from bot.views import ResultButton
from engine import ConfigError, Engine, GenerationRequest, JobView, Kind, Settings

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.imagine",
    "bot.images",
    "bot.queue",
    "bot.moderation",
    "bot.starboard",
    "bot.settings",
)

Reloader = Callable[[], Settings | ConfigError]


HTTP_CONNECTIONS = 32


class ImagineBot(commands.Bot):
    """A Discord client that turns interactions into engine jobs and delivers the results."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reload: Reloader | None = None,
        *,
        clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        # Guild message reactions (not privileged) carry the ⭐ for the starboard.
        options.setdefault("intents", discord.Intents(guilds=True, guild_reactions=True))
        options.setdefault("allowed_mentions", NO_MENTIONS)
        # discord.py refuses timeouts under 30 s; past it a 429 raises RateLimited at once.
        options.setdefault("max_ratelimit_timeout", max(30.0, settings.bot.max_retry_after_s))
        # discord.py's default pool is unbounded: a burst of 2,000 interactions opened 2,000
        # connections. A bounded pool reuses them (must be made on the running loop).
        options.setdefault("connector", aiohttp.TCPConnector(limit=HTTP_CONNECTIONS))
        # Slash commands only: no prefix commands, so no message content is ever read.
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, **options)
        self.settings = settings
        self.engine = engine
        self.delivery = Delivery(self, engine, settings, clock)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]
        self._reload = reload
        self._restore_endpoints: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        """Point discord.py at `[bot] api_base` when set, then log in."""
        if self.settings.bot.api_base and self._restore_endpoints is None:
            self._restore_endpoints = point_discord_py_at(
                self.settings.bot.api_base, self.settings.bot.gateway_url
            )
        await super().login(token)

    async def setup_hook(self) -> None:
        """Load the features, register persistent buttons, sync commands, resume deliveries."""
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(ResultButton)
        await self._sync_commands()
        count = await self.delivery.resume()
        if count:
            log.info("following %d Discord jobs from before the restart", count)

    async def _sync_commands(self) -> None:
        guild_ids = self.settings.bot.guild_ids
        if not guild_ids:
            await self.tree.sync()
            return
        for guild_id in guild_ids:
            guild = discord.Object(int(guild_id))
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    async def close(self) -> None:
        """Stop following jobs, disconnect, undo the endpoint patch."""
        await self.delivery.close()
        await super().close()
        if self._restore_endpoints is not None:
            self._restore_endpoints()
            self._restore_endpoints = None

    def reload_config(self) -> Settings | ConfigError:
        """Re-read the config file; a bad file keeps the old settings and returns why."""
        if self._reload is None:
            return ConfigError("config", "no config file to reload")
        result = self._reload()
        if isinstance(result, Settings):
            self.apply(result)
        return result

    def apply(self, settings: Settings) -> None:
        """Use reloaded settings (command option bounds change after a restart)."""
        self.settings = settings
        self.delivery.apply(settings)

    # -- answering -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def answering(self, interaction: discord.Interaction) -> AsyncIterator[None]:
        """Turn known errors into their ephemeral text, anything else into an apology."""
        try:
            yield
        except Exception as error:
            text = replies.text_for(error)
            if text is None:
                log.exception("interaction %s failed", interaction.id)
                text = replies.apology(interaction.id)
            await self.reply(interaction, text)

    async def reply(self, interaction: discord.Interaction, text: str) -> None:
        """Answer privately: the first response when still open, else the deferred message."""
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
            elif (
                interaction.response.type
                is discord.InteractionResponseType.deferred_channel_message
            ):
                # A public deferral can't turn ephemeral: say it in the "thinking" message.
                await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning("could not answer interaction %s: %r", interaction.id, error)

    async def _on_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", error)
        text = replies.text_for(original)
        if text is None:
            log.error("command failed (ref %s)", interaction.id, exc_info=original)
            text = replies.apology(interaction.id)
        await self.reply(interaction, text)

    # -- jobs ------------------------------------------------------------------------------

    async def submit_from(
        self,
        interaction: discord.Interaction,
        request: GenerationRequest,
        notes: Sequence[str] = (),
    ) -> None:
        """Queue a job for an interaction and follow it; refusals are ephemeral and cost no GPU.

        The engine decides from memory (`admit`), so a refusal is answered as the first,
        private response; an accepted job is acknowledged before its SQLite insert lands.
        `notes` (what cleaning an init image changed) are said with the result.
        """
        checks.require_bot_permissions(interaction)
        requester = checks.requester_of(interaction)
        delivery = str(self.engine.preferences(requester).delivery)
        target = Target.of(interaction, requester.is_nsfw_channel, tuple(notes), delivery)
        origin, key = target.to_origin(), str(interaction.id)
        if is_filled_in(request):
            pending = self.engine.admit(request, requester, origin=origin, idempotency_key=key)
        else:  # img2img from an upload, zoom out, pan: the engine fills it in, off the loop
            pending = _done(await self.engine.submit(request, requester, origin, key))
        if not await self._defer(interaction, ephemeral=target.is_private):
            target = target.without_token()
        job = await pending
        self.delivery.follow(job.id, target)

    async def _defer(self, interaction: discord.Interaction, ephemeral: bool = False) -> bool:
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            return True  # deferred already, while an init image was downloaded
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            return True
        except discord.HTTPException as error:
            # Already acknowledged (the same interaction twice) or too late: the job still
            # runs, and its result goes to the channel if nobody else holds the token.
            log.warning("could not defer interaction %s: %r", interaction.id, error)
            return False


def is_filled_in(request: GenerationRequest) -> bool:
    """Return whether `engine.admit` can take a request as it is (not made from an image)."""
    return request.kind == Kind.TXT2IMG or request.width is not None


def _done(job: JobView) -> asyncio.Future[JobView]:
    future: asyncio.Future[JobView] = asyncio.get_running_loop().create_future()
    future.set_result(job)
    return future
