"""Read a demo image back into caption attributes with plain image analysis (numpy only).

Background: the commonest palette colour on the border. Shape colour: the commonest other
palette colour. The shape is the largest connected region of that colour; its centroid gives
the position. Around it each pixel's coverage (0–1, read along the background→shape colour line,
so anti-aliased edges count) is compared with each shape drawn the way the dataset draws it,
fitted to the covered area and centroid: the closest drawing gives the shape kind and its size.
A thresholded mask could not tell a 7 px square from a circle; coverage reads every clean
32 px drawing right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.demo.captions import COLOURS, SHAPES
from engine.demo.dataset import CENTRES, RADII, draw_coverage, shape_polygon

PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
NAMES = list(COLOURS)
MIN_PIXELS_FRACTION = 0.004


@dataclass(frozen=True)
class Reading:
    """What an image shows; None where nothing could be read."""

    background: str
    colour: str | None
    shape: str | None
    position: str | None
    size: str | None


def nearest_colours(image: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for every pixel."""
    pixels = image.reshape(-1, 1, 3).astype(np.float32)
    distances = ((pixels - PALETTE[None]) ** 2).sum(axis=2)
    return distances.argmin(axis=1).reshape(image.shape[:2])


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, label = 0, 0, 0
    height, width = mask.shape
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x]:
            continue
        label += 1
        stack, size = [(y, x)], 0
        labels[y, x] = label
        while stack:
            cy, cx = stack.pop()
            size += 1
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best


@cache
def unit_geometry(shape: str) -> tuple[float, float, float]:
    """Area and area-centroid offset (x, y) of a shape of radius 1 centred on (0, 0)."""
    points = np.array(shape_polygon(shape, 0.0, 0.0, 1.0))
    x, y = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    return (
        float(abs(area)),
        float(((x + x1) * cross).sum() / (6 * area)),
        float(((y + y1) * cross).sum() / (6 * area)),
    )


def coverage(image: np.ndarray, background: int, colour: int) -> np.ndarray:
    """How much of each pixel the shape covers, read along the background→shape colour line."""
    low, high = PALETTE[background], PALETTE[colour]
    direction = high - low
    share = (image.astype(np.float32) - low) @ direction / float(direction @ direction)
    return np.clip(share, 0.0, 1.0)


def near(region: np.ndarray, reach: int) -> np.ndarray:
    """The region grown by `reach` pixels in every direction (square neighbourhood)."""
    grown = region.copy()
    for _ in range(reach):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= step[:, :-1].copy()
        step[:, :-1] |= step[:, 1:].copy()
        grown = step
    return grown


def fit_template(alpha: np.ndarray, shape: str) -> tuple[float, float]:
    """Squared error of the best anti-aliased drawing of `shape` against the coverage map.

    The drawing's size comes from the covered area and its place from the coverage centroid,
    then a small search around both absorbs rounding; returns (error, radius in pixels).
    """
    unit_area, off_x, off_y = unit_geometry(shape)
    total = float(alpha.sum())
    ys, xs = np.indices(alpha.shape)
    mean_x = float((alpha * (xs + 0.5)).sum() / total)
    mean_y = float((alpha * (ys + 0.5)).sum() / total)
    r0 = math.sqrt(total / unit_area)
    best = (math.inf, r0)
    for scale in (0.94, 1.0, 1.06):
        r = r0 * scale
        for dx in (-0.4, 0.0, 0.4):
            for dy in (-0.4, 0.0, 0.4):
                cx, cy = mean_x - off_x * r + dx, mean_y - off_y * r + dy
                template = draw_coverage(shape, cx, cy, r, alpha.shape[0])
                error = float(((template - alpha) ** 2).sum())
                best = min(best, (error, r))
    return best


def read_image(image: np.ndarray) -> Reading:
    """Classify one RGB uint8 image (square, any size) into caption attributes."""
    labels = nearest_colours(image)
    size_px = labels.shape[0]
    border = np.concatenate(
        [labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()]
    )
    background = int(np.bincount(border, minlength=len(NAMES)).argmax())
    inside = labels[labels != background]
    if inside.size < MIN_PIXELS_FRACTION * labels.size:
        return Reading(NAMES[background], None, None, None, None)
    colour = int(np.bincount(inside, minlength=len(NAMES)).argmax())
    region = largest_region(labels == colour)
    ys, xs = np.nonzero(region)
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / size_px
    position = min(CENTRES, key=lambda p: float(((np.array(CENTRES[p]) - centroid) ** 2).sum()))
    alpha = coverage(image, background, colour) * near(region, 2)
    fits = {shape: fit_template(alpha, shape) for shape in SHAPES}
    shape = min(fits, key=lambda s: fits[s][0])
    radius = fits[shape][1] / size_px
    size = min(RADII, key=lambda s: abs(RADII[s] - radius))
    return Reading(NAMES[background], NAMES[colour], shape, position, size)
