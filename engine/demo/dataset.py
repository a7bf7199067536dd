"""Draw the demo's training images with Pillow, on the fly, from captions.

Geometry is relative to the image side, so one caption draws the same scene at any size.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from engine.demo.captions import COLOURS, Caption, sample_caption

CENTRES = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
RADII = {"small": 0.12, "medium": 0.17, "large": 0.22}
JITTER_CENTRE = 0.03
JITTER_RADIUS = 0.08
SUPERSAMPLE = 4


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of a shape around a centre, sized so that all shapes look about equally big."""
    if shape == "circle":
        n, radius, start = 64, r, 0.0
    elif shape == "square":
        n, radius, start = 4, r * 0.85 * math.sqrt(2), math.pi / 4
    elif shape == "triangle":
        n, radius, start = 3, r * 1.2, -math.pi / 2
    elif shape == "star":
        points = []
        for k in range(10):
            angle = -math.pi / 2 + k * math.pi / 5
            radius = r * 1.25 * (1.0 if k % 2 == 0 else 0.5)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [
        (
            cx + radius * math.cos(start + 2 * math.pi * k / n),
            cy + radius * math.sin(start + 2 * math.pi * k / n),
        )
        for k in range(n)
    ]


def draw_coverage(shape: str, cx: float, cy: float, r: float, size_px: int) -> np.ndarray:
    """How much of each pixel one shape covers (0–1), drawn as `draw` draws (eval templates)."""
    big, k = size_px * SUPERSAMPLE, SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    ImageDraw.Draw(image).polygon(shape_polygon(shape, cx * k, cy * k, r * k), fill=255)
    small = image.resize((size_px, size_px), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def draw(caption: Caption, size_px: int, rng: random.Random | None = None) -> Image.Image:
    """Draw one caption's scene; `rng` jitters place and size a little (None: exact)."""
    big = size_px * SUPERSAMPLE
    jitter = (lambda s: rng.uniform(-s, s)) if rng else (lambda s: 0.0)
    fx, fy = CENTRES[caption.position]
    cx, cy = (fx + jitter(JITTER_CENTRE)) * big, (fy + jitter(JITTER_CENTRE)) * big
    r = RADII[caption.size] * (1 + jitter(JITTER_RADIUS)) * big
    image = Image.new("RGB", (big, big), COLOURS[caption.background])
    ImageDraw.Draw(image).polygon(
        shape_polygon(caption.shape, cx, cy, r), fill=COLOURS[caption.colour]
    )
    return image.resize((size_px, size_px), Image.Resampling.BOX)


def draw_batch(
    rng: random.Random, count: int, size_px: int, any_pair: bool = False
) -> tuple[list[str], np.ndarray]:
    """Sample `count` seen captions (any pair: `any_pair`) and draw them: texts and float32 NCHW
    pixels in [-1, 1]."""
    captions = [sample_caption(rng, any_pair=any_pair) for _ in range(count)]
    pixels = np.stack([np.asarray(draw(c, size_px, rng)) for c in captions])
    array = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return [c.text for c in captions], array
