"""Slash commands: /imagine, /queue, /cancel, /status and the /mod group.

No `from __future__ import annotations` here: discord.py reads the option bounds from the
annotations, which are built from the config when the commands are registered.
"""

import re
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import Choice, Range

from bot import checks
from bot.messages import escape
from bot.replies import duration
from engine import (
    ASPECTS,
    SCHEDULERS,
    SEED_MAX,
    ConfigError,
    EngineStatus,
    GenerationRequest,
    InvalidRequest,
    JobView,
    NotFound,
)

if TYPE_CHECKING:
    from bot.client import ImagineBot

MESSAGE_CHARS = 1900
DISCORD_MAX_OPTION_CHARS = 6000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(bot: "ImagineBot") -> None:
    """Add every command to the bot's tree, with bounds from the config."""
    tree = bot.tree
    tree.add_command(_imagine(bot))
    for command in _user_commands(bot):
        tree.add_command(command)
    tree.add_command(_mod_group(bot))


def _imagine(bot: "ImagineBot") -> app_commands.Command:
    limits = bot.settings.limits
    chars = min(limits.max_prompt_chars, DISCORD_MAX_OPTION_CHARS)
    Prompt = Range[str, 1, chars]
    Steps = Range[int, 1, limits.max_steps]
    Guidance = Range[float, 0.0, limits.max_guidance]
    Count = Range[int, 1, limits.max_count]
    Seed = Range[int, 0, SEED_MAX]

    @app_commands.command(name="imagine", description="Generate images from a prompt")
    @app_commands.describe(
        prompt="What to draw; inline flags work too: --ar 3:2 --seed 7 --no cars --steps 30",
        negative="What to keep out of the image",
        aspect="Aspect ratio (width:height)",
        steps=f"Denoising steps (1–{limits.max_steps}, default {limits.default_steps})",
        guidance=f"How closely to follow the prompt (0–{limits.max_guidance:g})",
        seed=f"Seed for reproducible images (0–{SEED_MAX})",
        count=f"How many images (1–{limits.max_count})",
        scheduler="Sampler",
    )
    @app_commands.choices(
        aspect=[Choice(name=a, value=a) for a in ASPECTS],
        scheduler=[Choice(name=s, value=s) for s in SCHEDULERS],
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: Prompt,  # type: ignore[valid-type]
        negative: Prompt | None = None,  # type: ignore[valid-type]
        aspect: str | None = None,
        steps: Steps | None = None,  # type: ignore[valid-type]
        guidance: Guidance | None = None,  # type: ignore[valid-type]
        seed: Seed | None = None,  # type: ignore[valid-type]
        count: Count | None = None,  # type: ignore[valid-type]
        scheduler: str | None = None,
    ) -> None:
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative or "",
            aspect=aspect,
            steps=steps,
            guidance=guidance,
            seed=seed,
            count=count,
            scheduler=scheduler,
        )
        async with bot.answering(interaction):
            await bot.submit_from(interaction, request)

    return imagine


def _user_commands(bot: "ImagineBot") -> list[app_commands.Command]:
    @app_commands.command(name="queue", description="Your jobs with their positions, and the total")
    async def queue(interaction: discord.Interaction) -> None:
        async with bot.answering(interaction):
            key = checks.requester_of(interaction).key
            jobs = bot.engine.jobs()
            mine = [job for job in jobs if job.requester.key == key]
            lines = [_job_line(job) for job in mine] or ["You have no jobs in the queue."]
            await bot.reply(interaction, _clip([*lines, _totals(jobs)]))

    @app_commands.command(name="cancel", description="Cancel one of your jobs")
    @app_commands.describe(job="Job id (from /queue); your newest job when left out")
    async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
        async with bot.answering(interaction):
            requester = checks.requester_of(interaction)
            if job is None:
                mine = bot.engine.jobs(requester.key)
                if not mine:
                    raise NotFound("job", "(you have none queued)")
                job = mine[-1].id
            view = await bot.engine.cancel(job.strip(), by=requester)
            await bot.reply(interaction, _cancel_text(view))

    @app_commands.command(name="status", description="Model, device, queue and speed")
    async def status(interaction: discord.Interaction) -> None:
        async with bot.answering(interaction):
            await bot.reply(interaction, status_text(bot.engine.status()))

    return [queue, cancel, status]


def _mod_group(bot: "ImagineBot") -> app_commands.Group:
    mod = app_commands.Group(
        name="mod",
        description="Moderator tools",
        guild_only=True,
        default_permissions=discord.Permissions(manage_messages=True),
    )

    @mod.command(name="queue", description="Every job in the queue")
    async def queue(interaction: discord.Interaction) -> None:
        async with bot.answering(interaction):
            checks.require_moderator(interaction, bot.engine)
            jobs = bot.engine.jobs()
            lines = [_job_line(job, with_requester=True) for job in jobs] or ["The queue is empty."]
            await bot.reply(interaction, _clip([*lines, _totals(jobs)]))

    @mod.command(name="cancel", description="Cancel any job")
    @app_commands.describe(job="Job id (from /mod queue)")
    async def cancel(interaction: discord.Interaction, job: str) -> None:
        async with bot.answering(interaction):
            requester = checks.require_moderator(interaction, bot.engine)
            view = await bot.engine.cancel(job.strip(), by=requester)
            await bot.reply(interaction, _cancel_text(view))

    @mod.command(name="ban", description="Stop a user from generating")
    @app_commands.describe(
        user="Who to ban",
        duration="How long: 30m, 12h, 7d, 2w; forever when left out",
        reason="Why (shown to the user)",
    )
    async def ban(
        interaction: discord.Interaction,
        user: discord.User,
        duration: str | None = None,
        reason: str | None = None,
    ) -> None:
        async with bot.answering(interaction):
            requester = checks.require_moderator(interaction, bot.engine)
            seconds = parse_duration(duration)
            until = None if seconds is None else time.time() + seconds
            await bot.engine.ban(f"discord:{user.id}", until, reason or "", by=requester)
            when = "permanently" if until is None else f"until <t:{int(until)}:f>"
            await bot.reply(interaction, f"Banned {user.mention} {when}.")

    @mod.command(name="unban", description="Lift a user's ban")
    async def unban(interaction: discord.Interaction, user: discord.User) -> None:
        async with bot.answering(interaction):
            requester = checks.require_moderator(interaction, bot.engine)
            removed = await bot.engine.unban(f"discord:{user.id}", by=requester)
            text = f"Unbanned {user.mention}." if removed else f"{user.mention} was not banned."
            await bot.reply(interaction, text)

    @mod.command(name="audit", description="Recently rejected prompts, with the rule and user")
    @app_commands.describe(limit="How many entries (1–25)")
    async def audit(interaction: discord.Interaction, limit: Range[int, 1, 25] = 10) -> None:
        async with bot.answering(interaction):
            checks.require_moderator(interaction, bot.engine)
            entries = bot.engine.store.audit(limit, action="rejected")
            lines = [
                f"<t:{int(e.at)}:R> **{e.rule}** {_who(e.actor)}: `{_code(e.prompt)}`"
                + (f" (matched `{_code(e.detail)}`)" if e.detail else "")
                for e in entries
            ]
            await bot.reply(interaction, _clip(lines or ["No rejected prompts."]))

    @mod.command(name="reload", description="Re-read the config file")
    async def reload(interaction: discord.Interaction) -> None:
        async with bot.answering(interaction):
            checks.require_moderator(interaction, bot.engine)
            result = bot.reload_config()
            if isinstance(result, ConfigError):
                raise result
            await bot.reply(interaction, f"Config reloaded from `{result.source or 'defaults'}`.")

    return mod


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


def status_text(status: EngineStatus) -> str:
    """Return the /status answer."""
    model = status.model
    if status.is_builtin_noise:
        model += " (tiny random model: images are noise)"
    elif status.is_demo:
        model += " (demo model)"
    speed = (
        f"{status.seconds_per_step:.2f} s/step" if status.seconds_per_step else "not measured yet"
    )
    lines = [
        f"**Model**: {escape(model, 300)}",
        f"**Device**: {status.device} ({status.dtype})",
        f"**Ready**: {'yes' if status.is_ready else 'loading'}"
        + ("" if status.is_accepting else ", not taking jobs"),
        f"**Queue**: {status.queue_length} waiting, {len(status.running_job_ids)} running",
        f"**Speed**: {speed} at {status.native_px}px",
        f"**Images made**: {status.images_made}",
    ]
    if status.degraded:
        lines.append(f"**Degraded**: {escape('; '.join(status.degraded), 300)}")
    return "\n".join(lines)


def _job_line(job: JobView, with_requester: bool = False) -> str:
    if job.state == "running":
        where = f"running, step {job.step}/{job.total}" if job.total else "running"
    else:
        eta = f", about {duration(job.eta_s)}" if job.eta_s else ""
        where = f"position {job.position}{eta}"
    who = f" {_who(job.requester.key)}" if with_requester else ""
    return f"`{job.id}`{who} {where}: {escape(job.request.prompt, 80)}"


def _totals(jobs: list[JobView]) -> str:
    running = sum(1 for job in jobs if job.state == "running")
    return f"In the queue: {len(jobs) - running} waiting, {running} running."


def _cancel_text(view: JobView) -> str:
    if view.state in ("done", "failed"):
        return f"Job `{view.id}` had already ended ({view.state})."
    if view.state == "running":
        return f"Stopping job `{view.id}`…"
    return f"Cancelled job `{view.id}`."


def _who(user_key: str) -> str:
    source, _, user_id = user_key.partition(":")
    return f"<@{user_id}>" if source == "discord" and user_id.isdigit() else escape(user_key, 60)


def _code(text: str) -> str:
    return text[:100].replace("`", "ˋ")


def _clip(lines: list[str]) -> str:
    text = ""
    for index, line in enumerate(lines):
        if len(text) + len(line) + 1 > MESSAGE_CHARS:
            return text + f"…and {len(lines) - index} more."
        text += line + "\n"
    return text.rstrip()
