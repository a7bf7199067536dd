"""What the bot's messages say: progress lines, the result embed, escaped prompts."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.replies import duration
from engine import ImageRecord

PROMPT_CHARS = 1500
EMBED_COLOUR = discord.Colour.blurple()


def escape(text: str, limit: int = PROMPT_CHARS) -> str:
    """Return user text safe to echo: Markdown escaped, cut to `limit` characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return discord.utils.escape_markdown(text)


def queued(prompt: str, position: int, eta_s: float | None) -> str:
    """Return the line for a waiting job."""
    eta = f", about {duration(eta_s)}" if eta_s else ""
    return f"**{escape(prompt)}**\n⏳ Queued: position {position}{eta}"


def started(prompt: str) -> str:
    """Return the line for a job the worker just took."""
    return f"**{escape(prompt)}**\n🎨 Starting…"


def progress(prompt: str, step: int, total: int) -> str:
    """Return the line for a running job."""
    return f"**{escape(prompt)}**\n🎨 Step {step}/{total}"


def failed(prompt: str, reason: str) -> str:
    """Return the line for a job that ended without images."""
    return f"**{escape(prompt)}**\n❌ Failed: {escape(reason, 300)}"


def cancelled(prompt: str) -> str:
    """Return the line for a cancelled job."""
    return f"**{escape(prompt)}**\n🚫 Cancelled."


def image_url(gallery_url: str, image_id: str) -> str:
    """Return an image's gallery page, or '' without a gallery."""
    return f"{gallery_url.rstrip('/')}/images/{image_id}" if gallery_url else ""


def result_embed(images: Sequence[ImageRecord], seconds: float, gallery_url: str) -> discord.Embed:
    """Return the embed that lists everything needed to reproduce the images."""
    first = images[0]
    embed = discord.Embed(
        title=_title(first.kind), description=escape(first.prompt, 4000), colour=EMBED_COLOUR
    )
    if first.negative_prompt:
        embed.add_field(name="Negative", value=escape(first.negative_prompt, 1000), inline=False)
    seeds = ", ".join(f"{i}: {image.seed}" for i, image in enumerate(images, start=1))
    embed.add_field(name="Seed", value=seeds, inline=False)
    embed.add_field(name="Steps", value=str(first.steps))
    embed.add_field(name="Guidance", value=f"{first.guidance:g}")
    embed.add_field(name="Size", value=f"{first.width}×{first.height}")
    embed.add_field(name="Scheduler", value=first.scheduler)
    embed.add_field(name="Model", value=escape(first.model, 200))
    embed.add_field(name="Time", value=f"{seconds:.1f} s")
    links = [f"[{i}]({image_url(gallery_url, im.id)})" for i, im in enumerate(images, start=1)]
    if gallery_url:
        embed.add_field(name="Gallery", value=" · ".join(links), inline=False)
    embed.set_footer(text=f"job {first.job_id}")
    return embed


def _title(kind: str) -> str:
    return {"variation": "Variation", "upscale": "Upscale"}.get(kind, "imagine")


def hidden_note(hidden: int) -> str:
    """Return the note for images the safety checker flagged outside age-restricted channels."""
    if not hidden:
        return ""
    noun = "image was" if hidden == 1 else "images were"
    return (
        f"\n⚠️ {hidden} {noun} flagged by the safety checker; "
        "flagged images are only posted in age-restricted channels."
    )
