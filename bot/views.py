"""Persistent result buttons: the custom id carries the action and the job or image id.

Handlers are registered with `Client.add_dynamic_items` at start, so a button pressed days
later, or after a restart, still works: nothing about it lives in memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from engine import ImageRecord

ACTIONS = ("reroll", "var", "up", "del")
# A press is dispatched as this client event; the imagine cog listens (`on_result_button`).
BUTTON_EVENT = "result_button"


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"imagine:(?P<action>reroll|var|up|del):(?P<ident>[0-9a-f]{1,40}(?:-\d{1,3})?)",
):
    """🔄 re-roll, V1…Vn, U1…Un or 🗑 delete on a result message."""

    def __init__(
        self,
        action: str,
        ident: str,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, emoji=emoji, style=style, row=row, custom_id=f"imagine:{action}:{ident}"
        )
        super().__init__(button)
        self.action = action
        self.ident = ident

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ResultButton:
        return cls(match["action"], match["ident"])

    async def callback(self, interaction: discord.Interaction[discord.Client]) -> None:  # type: ignore[override]
        interaction.client.dispatch(BUTTON_EVENT, self.action, self.ident, interaction)


def result_view(
    job_id: str, images: Sequence[ImageRecord], gallery_url: str, has_delete: bool = True
) -> discord.ui.View:
    """Return the buttons under a result: re-roll, delete, gallery link, then V and U per image."""
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("reroll", job_id, emoji="🔄", row=0))
    if has_delete:
        view.add_item(ResultButton("del", job_id, emoji="🗑", row=0))
    if gallery_url and images:
        url = f"{gallery_url.rstrip('/')}/images/{images[0].id}"
        view.add_item(discord.ui.Button(label="Gallery", url=url, row=0))
    for index, image in enumerate(images, start=1):
        view.add_item(ResultButton("var", image.id, label=f"V{index}", row=1))
    for index, image in enumerate(images, start=1):
        view.add_item(ResultButton("up", image.id, label=f"U{index}", row=2))
    return view
