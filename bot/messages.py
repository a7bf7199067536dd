"""What the bot's messages say: progress lines, the result embed, escaped prompts."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.replies import duration
from engine import EngineStatus, ImageRecord, JobView, LoraStatus, StyleStatus, WorkerStatus

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


def tier(weight: int) -> str:
    """Return the /queue line naming the caller's turns per round in the fair queue."""
    if weight <= 1:
        return "Your tier: standard (1 turn per round)"
    return f"Your tier: {weight} turns per round"


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


NO_IMAGE = (
    "That message has no image. Use it on a message with a PNG, JPEG, WebP or GIF attached, "
    "or attach one to /imagine (`image`)."
)


def input_notes(notes: Sequence[str]) -> str:
    """Return what cleaning the init image changed, one line each ('' when nothing)."""
    return "".join(f"\nℹ️ Your image: {escape(note, 200)}." for note in notes)


def image_url(gallery_url: str, image_id: str) -> str:
    """Return an image's gallery page, or '' without a gallery."""
    return f"{gallery_url.rstrip('/')}/images/{image_id}" if gallery_url else ""


def result_embed(
    images: Sequence[ImageRecord],
    seconds: float,
    gallery_url: str,
    applied: Sequence[str] | None = None,
) -> discord.Embed:
    """Return the embed that lists everything needed to reproduce the images, and which of the
    requester's own defaults (`/settings`) were applied."""
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
    if first.style:
        embed.add_field(name="Style", value=escape(first.style, 200))
    if first.loras:
        embed.add_field(name="LoRAs", value=escape(lora_text(first.loras), 300))
    if applied:
        embed.add_field(name="Your defaults", value=escape("; ".join(applied), 1000), inline=False)
    embed.add_field(name="Time", value=f"{seconds:.1f} s")
    links = [f"[{i}]({image_url(gallery_url, im.id)})" for i, im in enumerate(images, start=1)]
    if gallery_url:
        embed.add_field(name="Gallery", value=" · ".join(links), inline=False)
    embed.set_footer(text=f"job {first.job_id}")
    return embed


def _title(kind: str) -> str:
    titles = {
        "variation": "Variation",
        "upscale": "Upscale",
        "img2img": "From your image",
        "outpaint": "Zoom out / pan",
        "inpaint": "Vary (region)",
    }
    return titles.get(kind, "imagine")


def hidden_note(hidden: int) -> str:
    """Return the note for images the safety checker flagged outside age-restricted channels."""
    if not hidden:
        return ""
    noun = "image was" if hidden == 1 else "images were"
    return (
        f"\n⚠️ {hidden} {noun} flagged by the safety checker; "
        "flagged images are only posted in age-restricted channels."
    )


MESSAGE_CHARS = 1900


def job_line(job: JobView, with_requester: bool = False) -> str:
    """Return one line of /queue: id, where the job is, its prompt."""
    if job.state == "running":
        where = f"running, step {job.step}/{job.total}" if job.total else "running"
    else:
        eta = f", about {duration(job.eta_s)}" if job.eta_s else ""
        where = f"position {job.position}{eta}"
    who = f" {who_is(job.requester.key)}" if with_requester else ""
    return f"`{job.id}`{who} {where}: {escape(job.request.prompt, 80)}"


def totals(jobs: Sequence[JobView]) -> str:
    """Return the queue's totals line."""
    running = sum(1 for job in jobs if job.state == "running")
    return f"In the queue: {len(jobs) - running} waiting, {running} running."


def cancel_text(view: JobView) -> str:
    """Return the answer to /cancel."""
    if view.state in ("done", "failed"):
        return f"Job `{view.id}` had already ended ({view.state})."
    if view.state == "running":
        return f"Stopping job `{view.id}`…"
    return f"Cancelled job `{view.id}`."


def who_is(user_key: str) -> str:
    """Return a mention for a Discord requester key, else the key, escaped."""
    source, _, user_id = user_key.partition(":")
    return f"<@{user_id}>" if source == "discord" and user_id.isdigit() else escape(user_key, 60)


def code(text: str) -> str:
    """Return text safe inside a `code` span (no backticks), cut to 100 characters."""
    return text[:100].replace("`", "ˋ")


def clip(lines: list[str]) -> str:
    """Join lines into one message within Discord's length, saying how many were left out."""
    text = ""
    for index, line in enumerate(lines):
        if len(text) + len(line) + 1 > MESSAGE_CHARS:
            return text + f"…and {len(lines) - index} more."
        text += line + "\n"
    return text.rstrip()


def lora_text(loras: str) -> str:
    """Return an image's LoRAs as the embed shows them: `fox 0.8, ink 1`."""
    return ", ".join(part.replace(":", " ") for part in loras.split())


def lora_line(lora: LoraStatus) -> str:
    """Return one line of /mod loras: the name, its label, its default weight and models."""
    label = f" ({escape(lora.label, 80)})" if lora.label != lora.name else ""
    models = ", ".join(escape(model, 64) for model in lora.models) or "every model"
    return f"**{escape(lora.name, 64)}**{label}: weight {lora.weight:g} · {models}"


def style_line(style: StyleStatus) -> str:
    """Return one line of /mod styles: the name, its label, its template and negative prompt."""
    label = f" ({escape(style.label, 80)})" if style.label != style.name else ""
    negative = f" · no: `{code(style.negative_prompt)}`" if style.negative_prompt else ""
    return f"**{escape(style.name, 64)}**{label}: `{code(style.prompt)}`{negative}"


def status_text(status: EngineStatus) -> str:
    """Return the /status answer: the default model, every worker and model, queue, speed."""
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
    lines += [_worker_line(worker) for worker in status.workers]
    if len(status.models) > 1:
        names = ", ".join(
            f"{escape(m.name, 60)}{' (default)' if m.is_default else ''}" for m in status.models
        )
        lines.append(f"**Models**: {names}")
    if status.inpaint_model:
        lines.append(f"**Zoom out, pan, vary region**: on {escape(status.inpaint_model, 60)}")
    else:
        lines.append(f"**Zoom out, pan, vary region**: off: {escape(status.outpaint_note, 300)}")
    if status.degraded:
        lines.append(f"**Degraded**: {escape('; '.join(status.degraded), 300)}")
    return "\n".join(lines)


def _worker_line(worker: WorkerStatus) -> str:
    state = "busy" if worker.is_busy else ("idle" if worker.is_alive else "gone")
    held = ", ".join(worker.resident) or "nothing yet"
    return (
        f"**Worker {escape(worker.name, 40)}**: {worker.device}, {state}, "
        f"holds {escape(held, 120)}, {worker.jobs_done} jobs done"
    )
