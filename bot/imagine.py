"""The imagine extension: `/imagine`, and the buttons under every result.

No `from __future__ import annotations` here: discord.py reads the option bounds from the
annotations, which are built from the config when the cog loads.
"""

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot import checks, images
from bot.delivery import NO_MENTIONS
from bot.views import BUTTON_EVENT
from engine import (
    ASPECTS,
    SCHEDULERS,
    SEED_MAX,
    Forbidden,
    GenerationRequest,
    Kind,
    NotFound,
    parse_loras,
)

if TYPE_CHECKING:
    from bot.client import ImagineBot

DISCORD_MAX_OPTION_CHARS = 6000
AUTOCOMPLETE_CHOICES = 25  # Discord shows at most 25
OWN_ACTIONS = ("reroll", "var", "up", "del")


class ImagineCog(commands.Cog):
    """Generate from a prompt; re-roll, vary, upscale or delete a result."""

    def __init__(self, bot: "ImagineBot") -> None:
        self.bot = bot
        self.command = imagine_command(bot)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)

    @commands.Cog.listener(f"on_{BUTTON_EVENT}")
    async def on_result_button(
        self, action: str, ident: str, interaction: discord.Interaction
    ) -> None:
        """Handle a result button: re-roll a job, vary or upscale an image, delete a result."""
        bot, engine = self.bot, self.bot.engine
        if action not in OWN_ACTIONS:
            return  # the edit buttons belong to bot.images
        async with bot.answering(interaction):
            if action == "del":
                await self._delete(ident, interaction)
                return
            requester = checks.requester_of(interaction)
            if action in ("reroll", "var") and engine.preferences(requester).remix:
                await self._ask_remix(action, ident, interaction)
                return
            if action == "reroll":
                request = await self._reroll(ident)
            elif action == "var":
                request = await engine.variation_request(ident, requester)
            else:
                request = await engine.upscale_request(ident, requester)
            await bot.submit_from(interaction, request)

    async def _ask_remix(self, action: str, ident: str, interaction: discord.Interaction) -> None:
        """Remix mode (`/settings`): ask for the new prompt before a re-roll or a variation."""
        bot, engine = self.bot, self.bot.engine
        if action == "reroll":
            request = (await engine.fetch_job(ident)).request
            modal = images.RemixModal(
                bot, ident, request.prompt, request.negative_prompt, interaction.id, True
            )
        else:
            image = await asyncio.to_thread(engine.library.image, ident)
            if image is None:
                raise NotFound("image", ident)
            modal = images.RemixModal(
                bot, image.job_id, image.prompt, image.negative_prompt, interaction.id,
                image_id=ident,
            )  # fmt: skip
        await interaction.response.send_modal(modal)

    async def _reroll(self, job_id: str) -> GenerationRequest:
        engine = self.bot.engine
        request = await engine.reroll_request(job_id)
        if request.kind == Kind.TXT2IMG:
            return request
        # reroll_request drops the job's stored init image and mask; remix_request keeps them.
        same = await engine.remix_request(job_id, request.prompt, request.negative_prompt)
        return dataclasses.replace(same, seed=None)

    async def _delete(self, job_id: str, interaction: discord.Interaction) -> None:
        engine = self.bot.engine
        requester = checks.requester_of(interaction)
        job = await engine.fetch_job(job_id)
        is_owner = job.requester.key == requester.key
        if not is_owner and not engine.moderator.is_moderator(requester):
            raise Forbidden("delete someone else's images")
        for image_id in job.image_ids:
            await engine.delete_image(image_id, by=requester)
        await interaction.response.edit_message(
            content=f"🗑 Deleted by {interaction.user.mention}.",
            embeds=[],
            attachments=[],
            view=None,
            allowed_mentions=NO_MENTIONS,
        )


def imagine_command(bot: "ImagineBot") -> app_commands.Command:
    """Return /imagine with option bounds from the config and models from the registry."""
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
        model="Which model draws it (default: the server's)",
        style="A shared style: wraps your prompt in its template (see /mod styles)",
        lora="A LoRA: NAME or NAME:0.8 (weight -2 to 2); more with --lora in the prompt",
        image="Start from this image (PNG, JPEG, WebP or GIF): img2img",
        strength="With an image: how far to move from it (0.05–1.0, default 0.6)",
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
        model: Range[str, 1, 64] | None = None,  # type: ignore[valid-type]
        style: Range[str, 1, 64] | None = None,  # type: ignore[valid-type]
        lora: Range[str, 1, 100] | None = None,  # type: ignore[valid-type]
        image: discord.Attachment | None = None,
        strength: Range[float, images.STRENGTH_MIN, images.STRENGTH_MAX] | None = None,  # type: ignore[valid-type]
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
            model=model,
            style=style,
            strength=strength if image is not None else None,
        )
        async with bot.answering(interaction):
            if lora:  # parsed by the engine, so a bad weight is answered like any refusal
                request = dataclasses.replace(request, loras=parse_loras(lora))
            if image is None:
                await bot.submit_from(interaction, request)
            else:
                await images.submit_img2img(bot, interaction, image, request)

    @imagine.autocomplete("model")
    async def model_names(interaction: discord.Interaction, current: str) -> list[Choice[str]]:
        return model_choices(bot, current)

    @imagine.autocomplete("style")
    async def style_names(interaction: discord.Interaction, current: str) -> list[Choice[str]]:
        return style_choices(bot, current)

    @imagine.autocomplete("lora")
    async def lora_names(interaction: discord.Interaction, current: str) -> list[Choice[str]]:
        return lora_choices(bot, current)

    return imagine


def model_choices(bot: "ImagineBot", current: str) -> list[Choice[str]]:
    """Return the registry's models that match what was typed (name or label)."""
    typed = current.casefold()
    choices = []
    for model in bot.engine.status().models:
        label = model.label if model.label == model.name else f"{model.label} ({model.name})"
        if model.kind != "txt2img" or not model.workers:
            continue
        if typed in model.name.casefold() or typed in model.label.casefold():
            choices.append(Choice(name=label[:100], value=model.name))
    return choices[:AUTOCOMPLETE_CHOICES]


def style_choices(bot: "ImagineBot", current: str) -> list[Choice[str]]:
    """Return the styles (the engine's, so a reload shows at once) that match what was typed."""
    typed = current.casefold()
    choices = []
    for style in bot.engine.status().styles:
        if typed in style.name.casefold() or typed in style.label.casefold():
            label = style.label if style.label == style.name else f"{style.label} ({style.name})"
            choices.append(Choice(name=label[:100], value=style.name))
    return choices[:AUTOCOMPLETE_CHOICES]


def lora_choices(bot: "ImagineBot", current: str) -> list[Choice[str]]:
    """Return the LoRAs that match what was typed before any `:`; a typed weight is kept."""
    typed, _, weight = current.partition(":")
    typed = typed.strip().casefold()
    choices = []
    for lora in bot.engine.status().loras:
        if typed not in lora.name.casefold() and typed not in lora.label.casefold():
            continue
        value = f"{lora.name}:{weight.strip()}" if weight.strip() else lora.name
        label = lora.label if lora.label == lora.name else f"{lora.label} ({lora.name})"
        shown = f"{label} · {weight.strip() or f'{lora.weight:g}'}"
        if lora.models:
            shown += f" · for {', '.join(lora.models)}"
        choices.append(Choice(name=shown[:100], value=value[:100]))
    return choices[:AUTOCOMPLETE_CHOICES]


async def setup(bot: "ImagineBot") -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(ImagineCog(bot))
