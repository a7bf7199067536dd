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

ACTIONS = (
    "reroll",
    "var",
    "up",
    "del",
    "remix",
    "zoom15",
    "zoom2",
    "left",
    "right",
    "panup",
    "down",
)
# Zoom out and pan under a single image: (action, label, emoji, row).
OUTPAINT_BUTTONS = (
    ("zoom15", "Zoom out 1.5×", "🔍", 3),
    ("zoom2", "Zoom out 2×", "🔍", 3),
    ("left", None, "⬅️", 4),
    ("right", None, "➡️", 4),
    ("panup", None, "⬆️", 4),
    ("down", None, "⬇️", 4),
)
# A press is dispatched as this client event; the imagine cog listens (`on_result_button`).
BUTTON_EVENT = "result_button"


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=(
        r"imagine:(?P<action>reroll|var|up|del|remix|zoom15|zoom2|left|right|panup|down)"
        r":(?P<ident>[0-9a-f]{1,40}(?:-\d{1,3})?)"
    ),
):
    """A button under a result: 🔄 re-roll, V1…Vn, U1…Un, 🗑 delete, ✏️ remix, zoom out, pan."""

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
    job_id: str,
    images: Sequence[ImageRecord],
    gallery_url: str,
    has_delete: bool = True,
    has_outpaint: bool = False,
) -> discord.ui.View:
    """Return the buttons under a result (at most Discord's 5 rows of 5).

    Row 0: re-roll, delete, gallery link, remix. Rows 1 and 2: V and U per image. With an
    inpainting model, a single image gets zoom out and "Vary (region)" (row 3) and pan (row 4);
    several images get one "Vary (region)" link each (row 3).
    """
    view = discord.ui.View(timeout=None)
    view.add_item(ResultButton("reroll", job_id, emoji="🔄", row=0))
    if has_delete:
        view.add_item(ResultButton("del", job_id, emoji="🗑", row=0))
    if gallery_url and images:
        url = f"{gallery_url.rstrip('/')}/images/{images[0].id}"
        view.add_item(discord.ui.Button(label="Gallery", url=url, row=0))
    view.add_item(ResultButton("remix", job_id, label="Remix", emoji="✏️", row=0))
    for index, image in enumerate(images, start=1):
        view.add_item(ResultButton("var", image.id, label=f"V{index}", row=1))
    for index, image in enumerate(images, start=1):
        view.add_item(ResultButton("up", image.id, label=f"U{index}", row=2))
    if has_outpaint:
        add_edit_buttons(view, images, gallery_url)
    return view


def add_edit_buttons(
    view: discord.ui.View, images: Sequence[ImageRecord], gallery_url: str
) -> None:
    """Add zoom out and pan (one image only) and the gallery's "Vary (region)" links."""
    if len(images) == 1:
        for action, label, emoji, row in OUTPAINT_BUTTONS:
            view.add_item(ResultButton(action, images[0].id, label=label, emoji=emoji, row=row))
    if not gallery_url:
        return
    for index, image in enumerate(images, start=1):
        label = "Vary (region)" if len(images) == 1 else f"Vary (region) {index}"
        url = f"{gallery_url.rstrip('/')}/images/{image.id}/edit"
        view.add_item(discord.ui.Button(label=label, url=url, emoji="🖌️", row=3))
