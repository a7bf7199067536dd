"""Read a demo image back into caption attributes with plain image analysis (numpy only).

Background: the commonest palette colour on the border. Shape colour: the commonest other
palette colour. The shape is the largest connected region of that colour; its centroid gives
the position, its size the size, and the best-overlapping drawn template the shape kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.demo.captions import COLOURS, SHAPES
from engine.demo.dataset import CENTRES, RADII, draw_mask, shape_polygon

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
def outline_extent(shape: str) -> tuple[float, float, float, float]:
    """Width, height and bounding-box centre offset of a shape of radius 1."""
    points = np.array(shape_polygon(shape, 0.0, 0.0, 1.0))
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = high - low
    centre = (low + high) / 2
    return float(width), float(height), float(centre[0]), float(centre[1])


def fit_template(region: np.ndarray, shape: str) -> tuple[float, float]:
    """Overlap (IoU) of the region with a drawn shape fitted to its bounding box, and its radius."""
    ys, xs = np.nonzero(region)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    unit_w, unit_h, off_x, off_y = outline_extent(shape)
    r = (width / unit_w + height / unit_h) / 2
    cx = (xs.max() + xs.min() + 1) / 2 - off_x * r
    cy = (ys.max() + ys.min() + 1) / 2 - off_y * r
    template = draw_mask(shape, cx, cy, r, region.shape[0])
    union = (template | region).sum()
    return float((template & region).sum() / union) if union else 0.0, float(r)


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
    fits = {shape: fit_template(region, shape) for shape in SHAPES}
    shape = max(fits, key=lambda s: fits[s][0])
    radius = fits[shape][1] / size_px
    size = min(RADII, key=lambda s: abs(RADII[s] - radius))
    return Reading(NAMES[background], NAMES[colour], shape, position, size)
