"""The moderation extension: `/mod queue|cancel|ban|unban|audit|styles|loras|reload`.

Discord's `default_permissions` only hides the group from members; every command checks at
run time that the caller moderates (Manage Messages, or a configured role).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import Range
from discord.ext import commands

from bot import checks, messages
from engine import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from bot.client import ImagineBot

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@app_commands.guild_only()
@app_commands.default_permissions(manage_messages=True)
class ModerationCog(commands.GroupCog, group_name="mod", group_description="Moderator tools"):
    """Every job, cancel any, bans, the audit log, reloading the config."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="queue", description="Every job in the queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """List every job with its requester."""
        async with self.bot.answering(interaction):
            checks.require_moderator(interaction, self.bot.engine)
            jobs = self.bot.engine.jobs()
            lines = [messages.job_line(job, with_requester=True) for job in jobs]
            text = messages.clip([*(lines or ["The queue is empty."]), messages.totals(jobs)])
            await self.bot.reply(interaction, text)

    @app_commands.command(name="cancel", description="Cancel any job")
    @app_commands.describe(job="Job id (from /mod queue)")
    async def cancel(self, interaction: discord.Interaction, job: str) -> None:
        """Cancel anyone's job."""
        async with self.bot.answering(interaction):
            requester = checks.require_moderator(interaction, self.bot.engine)
            view = await self.bot.engine.cancel(job.strip(), by=requester)
            await self.bot.reply(interaction, messages.cancel_text(view))

    @app_commands.command(name="ban", description="Stop a user from generating")
    @app_commands.describe(
        user="Who to ban",
        duration="How long: 30m, 12h, 7d, 2w; forever when left out",
        reason="Why (shown to the user)",
    )
    async def ban(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        duration: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Ban a user for a while, or forever."""
        async with self.bot.answering(interaction):
            requester = checks.require_moderator(interaction, self.bot.engine)
            seconds = parse_duration(duration)
            until = None if seconds is None else time.time() + seconds
            await self.bot.engine.ban(f"discord:{user.id}", until, reason or "", by=requester)
            when = "permanently" if until is None else f"until <t:{int(until)}:f>"
            await self.bot.reply(interaction, f"Banned {user.mention} {when}.")

    @app_commands.command(name="unban", description="Lift a user's ban")
    async def unban(self, interaction: discord.Interaction, user: discord.User) -> None:
        """Lift a ban."""
        async with self.bot.answering(interaction):
            requester = checks.require_moderator(interaction, self.bot.engine)
            removed = await self.bot.engine.unban(f"discord:{user.id}", by=requester)
            text = f"Unbanned {user.mention}." if removed else f"{user.mention} was not banned."
            await self.bot.reply(interaction, text)

    @app_commands.command(
        name="audit", description="Recently rejected prompts, with the rule and user"
    )
    @app_commands.describe(limit="How many entries (1–25)")
    async def audit(self, interaction: discord.Interaction, limit: Range[int, 1, 25] = 10) -> None:
        """Show the newest rejected prompts."""
        async with self.bot.answering(interaction):
            checks.require_moderator(interaction, self.bot.engine)
            library = self.bot.engine.library
            entries = await asyncio.to_thread(library.audit, limit, "rejected")
            lines = [
                f"<t:{int(e.at)}:R> **{e.rule}** {messages.who_is(e.actor)}: "
                f"`{messages.code(e.prompt)}`"
                + (f" (matched `{messages.code(e.detail)}`)" if e.detail else "")
                for e in entries
            ]
            await self.bot.reply(interaction, messages.clip(lines or ["No rejected prompts."]))

    @app_commands.command(name="styles", description="The styles on offer, with their templates")
    async def styles(self, interaction: discord.Interaction) -> None:
        """List every style: name, label, prompt template and negative prompt."""
        async with self.bot.answering(interaction):
            checks.require_moderator(interaction, self.bot.engine)
            styles = self.bot.engine.status().styles
            lines = [messages.style_line(style) for style in styles]
            none = "No styles: add `[styles.<name>]` tables to the config and `/mod reload`."
            await self.bot.reply(interaction, messages.clip(lines or [none]))

    @app_commands.command(name="loras", description="The LoRAs on offer, with their weights")
    async def loras(self, interaction: discord.Interaction) -> None:
        """List every LoRA: name, label, default weight and the models it fits."""
        async with self.bot.answering(interaction):
            checks.require_moderator(interaction, self.bot.engine)
            lines = [messages.lora_line(lora) for lora in self.bot.engine.status().loras]
            none = "No LoRAs: add `[loras.<name>]` tables to the config and `/mod reload`."
            await self.bot.reply(interaction, messages.clip(lines or [none]))

    @app_commands.command(name="reload", description="Re-read the config file")
    async def reload(self, interaction: discord.Interaction) -> None:
        """Apply the config file again; a bad one keeps the old config and says why."""
        async with self.bot.answering(interaction):
            checks.require_moderator(interaction, self.bot.engine)
            result = self.bot.reload_config()
            if isinstance(result, ConfigError):
                raise result
            where = result.source or "defaults"
            await self.bot.reply(interaction, f"Config reloaded from `{where}`.")


def parse_duration(text: str | None) -> float | None:
    """Return seconds for '30m', '12h', '7d', '2w' (or a bare number of minutes); None = forever."""
    if text is None or text.strip().lower() in ("", "forever", "permanent", "never"):
        return None
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise InvalidRequest(
            "duration", f"expected a number and a unit such as 30m, 12h, 7d; got {text!r}"
        )
    return int(match.group(1)) * _UNITS[match.group(2) or "m"]


async def setup(bot: ImagineBot) -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(ModerationCog(bot))
