"""The settings extension: `/settings`, one private panel for a person's own defaults.

Selects for aspect, model, style and where results go; buttons for steps, guidance and the
negative prompt (a modal), remix on/off and reset. The panel's components are dynamic items
whose custom id names the field, so a panel opened before a restart still works: the values
live in the engine (SQLite), never in the panel.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import checks, messages
from bot.delivery import NO_MENTIONS
from engine import ASPECTS, Delivery, InvalidRequest, Preferences, steps_ceiling

if TYPE_CHECKING:
    from bot.client import ImagineBot

UNSET = "-"  # the select option that means "the server's default"
MAX_OPTIONS = 25  # Discord's limit per select
MODAL_TIMEOUT_S = 600
DELIVERIES = {
    Delivery.CHANNEL: ("In the channel", "Everyone in the channel sees your results"),
    Delivery.PRIVATE: ("Only me", "An ephemeral response only you can see"),
    Delivery.DM: ("By direct message", "Sent to your DMs (if they are open)"),
}
SELECTS = ("aspect", "model", "style", "delivery")
BUTTONS = ("more", "remix", "reset")


def panel_embed(bot: ImagineBot, preferences: Preferences) -> discord.Embed:
    """Return the embed that shows a person's defaults beside the server's."""
    limits = bot.settings.limits
    status = bot.engine.status()
    server = {
        "aspect": "1:1 (the model's size)",
        "steps": str(limits.default_steps),
        "guidance": f"{limits.default_guidance:g}",
        "model": status.model,
        "style": "none",
    }
    embed = discord.Embed(
        title="Your settings",
        description=(
            "Used when you leave an option out of /imagine; anything you type (an option or "
            "an inline flag such as --ar 3:2) still wins. The gallery uses them too once you "
            "sign in there with Discord."
        ),
        colour=messages.EMBED_COLOUR,
    )
    shown: dict[str, Any] = {
        "aspect": preferences.aspect,
        "steps": preferences.steps,
        "guidance": None if preferences.guidance is None else f"{preferences.guidance:g}",
        "model": preferences.model,
        "style": preferences.style,
    }
    for name, value in shown.items():
        text = f"**{messages.escape(str(value), 200)}**" if value is not None else None
        embed.add_field(name=name.capitalize(), value=text or f"server: {server[name]}")
    negative = preferences.negative_prompt
    embed.add_field(
        name="Negative prompt",
        value=messages.escape(negative, 1000) if negative else "none",
        inline=False,
    )
    embed.add_field(name="Results", value=DELIVERIES[preferences.delivery][0])
    embed.add_field(
        name="Remix",
        value="on: 🔄 and V1…V4 ask for the new prompt first" if preferences.remix else "off",
    )
    return embed


def panel_view(bot: ImagineBot, preferences: Preferences) -> discord.ui.View:
    """Return the panel's selects (rows 0–3) and buttons (row 4)."""
    view = discord.ui.View(timeout=None)
    aspects = [(a, a, None) for a in ASPECTS]
    view.add_item(_select("aspect", "Aspect ratio", aspects, preferences.aspect, 0))
    models = [
        (m.name, m.label or m.name, None) for m in bot.engine.status().models if m.kind == "txt2img"
    ]
    view.add_item(_select("model", "Model", models, preferences.model, 1))
    styles = [(s.name, s.label or s.name, None) for s in bot.engine.status().styles]
    if styles:
        view.add_item(_select("style", "Style", styles, preferences.style, 2, unset="No style"))
    deliveries = [(str(d), label, about) for d, (label, about) in DELIVERIES.items()]
    view.add_item(_select("delivery", "Results", deliveries, str(preferences.delivery), 3, None))
    view.add_item(SettingsButton("more", "Steps, guidance, negative…", discord.ButtonStyle.primary))
    remix = "Remix: on" if preferences.remix else "Remix: off"
    view.add_item(SettingsButton("remix", remix, discord.ButtonStyle.secondary))
    view.add_item(SettingsButton("reset", "Reset to the server's", discord.ButtonStyle.danger))
    return view


def _select(
    field: str,
    placeholder: str,
    choices: Sequence[tuple[str, str, str | None]],
    current: str | None,
    row: int,
    unset: str | None = "Server default",
) -> SettingsSelect:
    options = []
    if unset is not None:
        options.append(discord.SelectOption(label=unset, value=UNSET, default=current is None))
    for value, label, about in choices[: MAX_OPTIONS - len(options)]:
        options.append(
            discord.SelectOption(
                label=label[:100], value=value[:100], description=about, default=value == current
            )
        )
    return SettingsSelect(field, placeholder, options, row)


class SettingsSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"imagine:set:(?P<field>aspect|model|style|delivery)",
):
    """One select of the panel; choosing saves the value at once."""

    def __init__(
        self,
        field: str,
        placeholder: str = "",
        options: list[discord.SelectOption] | None = None,
        row: int | None = None,
    ) -> None:
        select: discord.ui.Select[Any] = discord.ui.Select(
            custom_id=f"imagine:set:{field}",
            placeholder=placeholder,
            options=options or [discord.SelectOption(label=UNSET)],
            row=row,
        )
        super().__init__(select)
        self.field = field

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> SettingsSelect:
        return cls(match["field"])

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:  # type: ignore[override]
        data: dict[str, Any] = dict(interaction.data or {})
        values = data.get("values") or [UNSET]
        value: str | None = str(values[0])
        if value == UNSET:
            value = None
        changes: dict[str, Any] = {self.field: value}
        if self.field == "delivery":
            changes[self.field] = Delivery(value or Delivery.CHANNEL)
        await change(interaction, changes)


class SettingsButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"imagine:set:(?P<field>more|remix|reset)",
):
    """The panel's buttons: open the numbers modal, toggle remix, reset everything."""

    def __init__(
        self,
        field: str,
        label: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            custom_id=f"imagine:set:{field}", label=label or field, style=style, row=4
        )
        super().__init__(button)
        self.field = field

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> SettingsButton:
        return cls(match["field"])

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:  # type: ignore[override]
        bot: ImagineBot = interaction.client  # type: ignore[assignment]
        async with bot.answering(interaction):
            current = bot.engine.preferences(checks.requester_of(interaction))
            if self.field == "more":
                await interaction.response.send_modal(NumbersModal(bot, current, interaction.id))
            elif self.field == "remix":
                await change(interaction, {"remix": not current.remix})
            else:
                await change(interaction, None)


async def change(interaction: discord.Interaction[Any], changes: dict[str, Any] | None) -> None:
    """Save a change (None: back to the server's defaults) and show the panel again."""
    bot: ImagineBot = interaction.client
    async with bot.answering(interaction):
        requester = checks.requester_of(interaction)
        current = bot.engine.preferences(requester)
        wanted = Preferences() if changes is None else dataclasses.replace(current, **changes)
        saved = await bot.engine.set_preferences(requester, wanted)
        embed, view = panel_embed(bot, saved), panel_view(bot, saved)
        if interaction.type is discord.InteractionType.modal_submit or interaction.message:
            await interaction.response.edit_message(embed=embed, view=view)
        else:
            await interaction.response.send_message(embed=embed, view=view, ephemeral=True)


class NumbersModal(discord.ui.Modal, title="Your defaults"):
    """Steps, guidance and the negative prompt; blank means the server's."""

    def __init__(self, bot: ImagineBot, current: Preferences, ident: int) -> None:
        super().__init__(custom_id=f"imagine:setmodal:{ident}", timeout=MODAL_TIMEOUT_S)
        self.bot = bot
        ceiling = steps_ceiling(bot.settings.limits)
        top = bot.settings.limits.max_guidance
        self.steps: discord.ui.TextInput[NumbersModal] = discord.ui.TextInput(
            label=f"Steps (1–{ceiling}, blank: the server's)",
            custom_id="steps",
            required=False,
            max_length=4,
            default="" if current.steps is None else str(current.steps),
        )
        self.guidance: discord.ui.TextInput[NumbersModal] = discord.ui.TextInput(
            label=f"Guidance (0–{top:g}, blank: the server's)",
            custom_id="guidance",
            required=False,
            max_length=8,
            default="" if current.guidance is None else f"{current.guidance:g}",
        )
        chars = min(bot.settings.limits.max_prompt_chars, 4000)
        self.negative: discord.ui.TextInput[NumbersModal] = discord.ui.TextInput(
            label="Negative prompt (added when you give none)",
            custom_id="negative",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=chars,
            default=current.negative_prompt[:chars],
        )
        self.add_item(self.steps)
        self.add_item(self.guidance)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        async with self.bot.answering(interaction):
            changes = {
                "steps": _number(self.steps.value, "steps", int),
                "guidance": _number(self.guidance.value, "guidance", float),
                "negative_prompt": self.negative.value,
            }
            await change(interaction, changes)


def _number(text: str, field: str, kind: type) -> Any:
    text = text.strip().replace(",", ".") if kind is float else text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        word = "a whole number" if kind is int else "a number"
        raise InvalidRequest(field, f"expected {word}, got {text[:20]!r}") from None


class SettingsCog(commands.Cog):
    """Your own defaults for /imagine."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings", description="Your defaults for /imagine (only you see)")
    async def settings(self, interaction: discord.Interaction) -> None:
        """Open the private settings panel."""
        async with self.bot.answering(interaction):
            current = self.bot.engine.preferences(checks.requester_of(interaction))
            await interaction.response.send_message(
                embed=panel_embed(self.bot, current),
                view=panel_view(self.bot, current),
                ephemeral=True,
                allowed_mentions=NO_MENTIONS,
            )


async def setup(bot: ImagineBot) -> None:
    """Load the extension (discord.py calls this)."""
    await bot.add_cog(SettingsCog(bot))
    bot.add_dynamic_items(SettingsSelect, SettingsButton)
