"""Outpainting canvases: zoom out and pan place an image on a larger canvas with a mask.

The old image keeps its pixels; the mask is white (repaint) over the new area only. Zoom out
centres the image on a canvas 1.5× or 2× its size; a pan extends one side by half of that side.
Sizes are rounded up to a multiple of 8 (what the UNet needs), the extra going to the new area.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

ZOOMS = {"zoom_1.5": 1.5, "zoom_2": 2.0}
PANS = ("left", "right", "up", "down")
MOVES = (*ZOOMS, *PANS)
# What the new area starts as: mid-grey reads as "unknown" to an inpainting model.
FILL = (127, 127, 127)


@dataclass(frozen=True)
class Canvas:
    """An outpainting input: the canvas (RGB PNG), its mask (L PNG) and where the old one sits."""

    image_png: bytes
    mask_png: bytes
    width: int
    height: int
    left: int
    top: int


def canvas_size(width: int, height: int, move: str) -> tuple[int, int, int, int]:
    """Return (canvas width, canvas height, left, top) for a move; ValueError on an unknown."""
    if move in ZOOMS:
        new_w = _up8(math.ceil(width * ZOOMS[move]))
        new_h = _up8(math.ceil(height * ZOOMS[move]))
        return new_w, new_h, (new_w - width) // 2, (new_h - height) // 2
    if move in ("left", "right"):
        new_w = _up8(width + math.ceil(width / 2))
        return new_w, height, new_w - width if move == "left" else 0, 0
    if move in ("up", "down"):
        new_h = _up8(height + math.ceil(height / 2))
        return width, new_h, 0, new_h - height if move == "up" else 0
    raise ValueError(f"expected one of {', '.join(MOVES)}, got {move!r}")


def outpaint_canvas(png: bytes, move: str) -> Canvas:
    """Place a stored image on its larger canvas; the mask marks the area to paint."""
    with Image.open(io.BytesIO(png)) as opened:
        source = opened.convert("RGB")
    new_w, new_h, left, top = canvas_size(source.width, source.height, move)
    canvas = Image.new("RGB", (new_w, new_h), FILL)
    canvas.paste(source, (left, top))
    mask = Image.new("L", (new_w, new_h), 255)
    mask.paste(0, (left, top, left + source.width, top + source.height))
    return Canvas(_png(canvas), _png(mask), new_w, new_h, left, top)


def outpaint_note(inpaint_model: str | None) -> str:
    """Return why zoom out, pan and vary region are off ("" when an inpainting model serves)."""
    if inpaint_model:
        return ""
    return (
        "zoom out, pan and vary region need an inpainting model, and none is configured: "
        'add a [models.<name>] table with kind = "inpaint" (see config.example.toml)'
    )


def _up8(value: int) -> int:
    return (value + 7) // 8 * 8


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
