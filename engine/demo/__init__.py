"""The demo model: a tiny Stable Diffusion 2 trained here on drawn shapes, and its caption grammar.

Importing this package needs no torch; training and evaluation import it when they run.
"""

from engine.demo.captions import (
    COLOURS,
    EXAMPLES,
    GRAMMAR,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    Caption,
    parse_caption,
    sample_caption,
)
from engine.demo.classify import Reading, read_image

__all__ = [
    "COLOURS",
    "EXAMPLES",
    "GRAMMAR",
    "HELD_OUT_PAIRS",
    "POSITIONS",
    "SHAPES",
    "Caption",
    "Reading",
    "parse_caption",
    "read_image",
    "sample_caption",
]
