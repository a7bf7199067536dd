"""Images in: img2img from an attachment or a message, and the remix modal.

`/imagine image:` and the "Imagine from this image" message command share one path: the
attachment's URL and size are checked before anything is fetched (only the configured
origins, never past `limits.max_upload_bytes`), the bytes are cleaned off the loop, and the
request goes to the engine as img2img with the cleaned PNG. Modals live in memory until they
are submitted or time out; the buttons that open them are persistent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, messages
from bot.views import BUTTON_EVENT
from engine import GenerationRequest, InvalidRequest, Kind, Settings
from engine.uploads import CleanImage, check_attachment_origin, clean_image, size_text

if TYPE_CHECKING:
    from bot.client import ImagineBot

CONTEXT_MENU = "Imagine from this image"
DISCORD_TEXT_INPUT_CHARS = 4000
MODAL_TIMEOUT_S = 30 * 60.0
# Discord wants an answer within 3 s: a download still running by then is answered with a
# deferral first, and its refusal (if any) goes into the "thinking" message.
ACK_BUDGET_S = 1.5
STRENGTH_MIN, STRENGTH_MAX = 0.05, 1.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
# Button action → the engine's outpaint mode ("up" already means upscale, so pan up is "panup").
OUTPAINT_ACTIONS = {
    "zoom15": "zoom_1.5",
    "zoom2": "zoom_2",
    "left": "left",
    "right": "right",
    "panup": "up",
    "down": "down",
}


def check_attachment(attachment: discord.Attachment, settings: Settings) -> None:
    """Refuse an attachment from elsewhere than Discord's CDN, or too big, before any fetch."""
    check_attachment_origin(attachment.url, settings.bot.attachment_origins)
    limit = settings.limits.max_upload_bytes
    if attachment.size > limit:
        reason = f"the file is {size_text(attachment.size)}; at most {size_text(limit)} is allowed"
        raise InvalidRequest("image", reason)


async def load_attachment(attachment: discord.Attachment, settings: Settings) -> CleanImage:
    """Download a checked attachment through discord.py's session and clean it off the loop."""
    check_attachment(attachment, settings)
    try:
        data = await attachment.read()
    except discord.HTTPException as error:
        raise InvalidRequest(
            "image", f"the attachment could not be fetched ({error.status})"
        ) from None
    limit = settings.limits.max_upload_bytes
    return await asyncio.to_thread(clean_image, data, field="image", max_bytes=limit)


async def init_image(
    bot: ImagineBot, interaction: discord.Interaction, attachment: discord.Attachment
) -> CleanImage:
    """Return the cleaned attachment, deferring the interaction if that takes a while."""
    check_attachment(attachment, bot.settings)
    loading = asyncio.ensure_future(load_attachment(attachment, bot.settings))
    done, _ = await asyncio.wait({loading}, timeout=ACK_BUDGET_S)
    if not done and not interaction.response.is_done():
        # Private delivery (`/settings`) defers privately: a deferral can't change later.
        delivery = bot.engine.preferences(checks.requester_of(interaction)).delivery
        await interaction.response.defer(thinking=True, ephemeral=delivery != "channel")
    return await loading


async def submit_img2img(
    bot: ImagineBot,
    interaction: discord.Interaction,
    attachment: discord.Attachment,
    request: GenerationRequest,
) -> None:
    """Queue `request` as img2img from an attachment (its notes go with the result)."""
    clean = await init_image(bot, interaction, attachment)
    request = dataclasses.replace(request, kind=Kind.IMG2IMG, init_png=clean.png)
    await bot.submit_from(interaction, request, notes=clean.notes)


def first_image(message: discord.Message) -> discord.Attachment | None:
    """Return a message's first attachment that says it is an image."""
    for attachment in message.attachments:
        content_type = (attachment.content_type or "").split(";")[0].strip()
        if content_type.startswith("image/"):
            return attachment
        if not content_type and attachment.filename.lower().endswith(IMAGE_SUFFIXES):
            return attachment
    return None


def parse_strength(text: str) -> float | None:
    """Return the typed strength (blank: the default), or raise InvalidRequest naming the range."""
    text = text.strip().replace(",", ".")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not STRENGTH_MIN <= value <= STRENGTH_MAX:
        raise InvalidRequest("strength", f"expected {STRENGTH_MIN}–{STRENGTH_MAX:g}, got {text!r}")
    return value


def prompt_chars(settings: Settings) -> int:
    """Return the longest prompt a modal accepts (Discord's 4000 or the configured limit)."""
    return min(settings.limits.max_prompt_chars, DISCORD_TEXT_INPUT_CHARS)


class ImageModal(discord.ui.Modal, title=CONTEXT_MENU):
    """Ask for the prompt (and strength) to draw from a message's image."""

    def __init__(self, bot: ImagineBot, attachment: discord.Attachment, ident: int) -> None:
        super().__init__(custom_id=f"imagine:from:{ident}", timeout=MODAL_TIMEOUT_S)
        self.bot = bot
        self.attachment = attachment
        self.prompt: discord.ui.TextInput[ImageModal] = discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            max_length=prompt_chars(bot.settings),
        )
        self.strength: discord.ui.TextInput[ImageModal] = discord.ui.TextInput(
            label=f"Strength ({STRENGTH_MIN}–{STRENGTH_MAX:g}, blank: 0.6)",
            custom_id="strength",
            required=False,
            max_length=8,
            placeholder="0.6: how far to move from the image",
        )
        self.add_item(self.prompt)
        self.add_item(self.strength)

    async def on_submit(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        async with self.bot.answering(interaction):
            strength = parse_strength(self.strength.value)
            request = GenerationRequest(prompt=self.prompt.value, strength=strength)
            await submit_img2img(self.bot, interaction, self.attachment, request)


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit a job's prompt and negative prompt; the rest (seed included) stays.

    With `new_seed` (🔄 re-roll while remix mode is on in `/settings`) the seed is drawn anew;
    with `image_id` (V1…V4 in remix mode) the new prompts make a variation of that image.
    """

    def __init__(
        self,
        bot: ImagineBot,
        job_id: str,
        prompt: str,
        negative: str,
        ident: int,
        new_seed: bool = False,
        image_id: str | None = None,
    ):
        source = image_id or job_id
        super().__init__(custom_id=f"imagine:remix:{source}:{ident}", timeout=MODAL_TIMEOUT_S)
        self.bot = bot
        self.job_id = job_id
        self.new_seed = new_seed
        self.image_id = image_id
        chars = prompt_chars(bot.settings)
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Prompt",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=prompt[:chars],
            max_length=chars,
        )
        self.negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label="Negative prompt",
            custom_id="negative",
            style=discord.TextStyle.paragraph,
            default=negative[:chars],
            max_length=chars,
            required=False,
        )
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        async with self.bot.answering(interaction):
            engine = self.bot.engine
            if self.image_id is not None:
                variation = GenerationRequest(
                    prompt=self.prompt.value,
                    negative_prompt=self.negative.value,
                    kind=Kind.VARIATION,
                    source_image_id=self.image_id,
                )
                await self.bot.submit_from(interaction, variation)
                return
            request = await engine.remix_request(
                self.job_id, self.prompt.value, self.negative.value
            )
            if self.new_seed:
                request = dataclasses.replace(request, seed=None)
            await self.bot.submit_from(interaction, request)


class ImagesCog(commands.Cog):
    """Img2img from a message's image; remix, zoom out and pan a result."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name=CONTEXT_MENU, callback=self.from_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def from_message(self, interaction: discord.Interaction, message: discord.Message):
        """Open the prompt modal for the message's image, or say it has none."""
        async with self.bot.answering(interaction):
            attachment = first_image(message)
            if attachment is None:
                await self.bot.reply(interaction, messages.NO_IMAGE)
                return
            check_attachment(attachment, self.bot.settings)
            modal = ImageModal(self.bot, attachment, interaction.id)
            await interaction.response.send_modal(modal)

    @commands.Cog.listener(f"on_{BUTTON_EVENT}")
    async def on_result_button(
        self, action: str, ident: str, interaction: discord.Interaction
    ) -> None:
        """Handle the edit buttons: ✏️ remix a job, zoom out or pan an image."""
        if action == "remix":
            async with self.bot.answering(interaction):
                await self._open_remix(ident, interaction)
            return
        how = OUTPAINT_ACTIONS.get(action)
        if how is None:
            return
        async with self.bot.answering(interaction):
            request = GenerationRequest(
                prompt="", kind=Kind.OUTPAINT, source_image_id=ident, outpaint=how
            )
            await self.bot.submit_from(interaction, request)

    async def _open_remix(self, job_id: str, interaction: discord.Interaction) -> None:
        job = await self.bot.engine.fetch_job(job_id)
        request = job.request
        modal = RemixModal(
            self.bot, job_id, request.prompt, request.negative_prompt, interaction.id
        )
        await interaction.response.send_modal(modal)


async def setup(bot: ImagineBot) -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(ImagesCog(bot))
