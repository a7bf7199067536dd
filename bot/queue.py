"""The queue extension: `/queue` (yours and the total), `/cancel`, `/status`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, messages
from engine import NotFound

if TYPE_CHECKING:
    from bot.client import ImagineBot


class QueueCog(commands.Cog):
    """Where your jobs are, cancelling them, and how the engine is doing."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Your jobs with their positions, and the total")
    async def queue(self, interaction: discord.Interaction) -> None:
        """List the caller's jobs and the queue's totals."""
        async with self.bot.answering(interaction):
            requester = checks.requester_of(interaction)
            jobs = self.bot.engine.jobs()
            mine = [job for job in jobs if job.requester.key == requester.key]
            lines = [messages.job_line(job) for job in mine] or ["You have no jobs in the queue."]
            tier = messages.tier(self.bot.engine.weight(requester))
            await self.bot.reply(interaction, messages.clip([*lines, tier, messages.totals(jobs)]))

    @app_commands.command(name="cancel", description="Cancel one of your jobs")
    @app_commands.describe(job="Job id (from /queue); your newest job when left out")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        """Cancel a job of the caller's (the newest when no id is given)."""
        async with self.bot.answering(interaction):
            requester = checks.requester_of(interaction)
            if job is None:
                mine = self.bot.engine.jobs(requester.key)
                if not mine:
                    raise NotFound("job", "(you have none queued)")
                job = mine[-1].id
            view = await self.bot.engine.cancel(job.strip(), by=requester)
            await self.bot.reply(interaction, messages.cancel_text(view))

    @app_commands.command(name="status", description="Models, workers, queue and speed")
    async def status(self, interaction: discord.Interaction) -> None:
        """Say which models run where, the queue and the recent speed."""
        async with self.bot.answering(interaction):
            await self.bot.reply(interaction, messages.status_text(self.bot.engine.status()))


async def setup(bot: ImagineBot) -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(QueueCog(bot))
