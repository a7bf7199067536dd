"""The demo model's caption grammar: what it was trained on, and so what it understands.

`a [small|large] <colour> <shape> [at the left|at the right|at the top|at the bottom|in the
center] on a <colour> background`. Where a caption leaves the size or the position open, the
training scenes draw any of the three sizes and any of the five places, so the model learns that
an open caption means "any", and different seeds draw different pictures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 230),
    "yellow": (245, 215, 35),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "medium", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES = {
    "left": "at the left",
    "right": "at the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# What the gallery's generate form shows when the demo model runs (it can't draw anything else).
GRAMMAR = (
    "a [small|large] <colour> <shape> [at the left|at the right|at the top|at the bottom|"
    "in the center] on a <colour> background"
)
EXAMPLES = (
    "a large red circle on a blue background",
    "a small yellow star at the top on a black background",
    "a green triangle at the left on a white background",
)
# Colour–shape pairs never shown in training: the eval measures how the model generalises to them.
HELD_OUT_PAIRS = frozenset(
    {("red", "star"), ("blue", "triangle"), ("yellow", "circle"), ("white", "square")}
)


@dataclass(frozen=True)
class Caption:
    """One scene: a shape of one colour on a background of another colour."""

    colour: str
    shape: str
    background: str
    size: str = "medium"
    position: str = "center"
    says_size: bool = False
    says_position: bool = False

    @property
    def text(self) -> str:
        """Render the caption in the grammar's words."""
        words = ["a"]
        if self.says_size:
            words.append(self.size)
        words += [self.colour, self.shape]
        if self.says_position:
            words.append(POSITION_PHRASES[self.position])
        words += ["on a", self.background, "background"]
        return " ".join(words)

    @property
    def is_held_out(self) -> bool:
        """Whether this colour–shape pair was kept out of training."""
        return (self.colour, self.shape) in HELD_OUT_PAIRS


def caption_words() -> list[str]:
    """Every word the grammar can produce, each once."""
    words = ["a", "on", "background", *COLOURS, *SHAPES, "small", "large"]
    for phrase in POSITION_PHRASES.values():
        words += phrase.split()
    return list(dict.fromkeys(words))


def sample_caption(
    rng: random.Random, *, held_out: bool = False, full: bool = False, any_pair: bool = False
) -> Caption:
    """Draw a random caption from seen pairs (only held-out pairs when `held_out`; any pair when
    `any_pair`, for the autoencoder, which reads no captions).

    Size and position are each named in about two thirds of captions; `full` names both always.
    An unnamed size is any of small, medium, large and an unnamed position any of the five places
    (the scene is drawn that way; the caption's text does not say it).
    """
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if any_pair or ((colour, shape) in HELD_OUT_PAIRS) == held_out:
            break
    background = rng.choice([c for c in COLOURS if c != colour])
    says_size = full or rng.random() < 2 / 3
    says_position = full or rng.random() < 2 / 3
    size = rng.choice(("small", "large")) if says_size else rng.choice(SIZES)
    position = rng.choice(POSITIONS)
    return Caption(colour, shape, background, size, position, says_size, says_position)


def parse_caption(text: str) -> Caption | None:
    """Read a caption back from its words; None when it is outside the grammar."""
    words = text.lower().split()
    if len(words) < 7 or words[0] != "a" or words[-4:-2] != ["on", "a"]:
        return None
    if words[-1] != "background" or words[-2] not in COLOURS:
        return None
    middle = words[1:-4]
    says_size = bool(middle) and middle[0] in ("small", "large")
    size = middle.pop(0) if says_size else "medium"
    if len(middle) < 2 or middle[0] not in COLOURS or middle[1] not in SHAPES:
        return None
    colour, shape, rest = middle[0], middle[1], " ".join(middle[2:])
    phrases = {phrase: name for name, phrase in POSITION_PHRASES.items()}
    if rest and rest not in phrases:
        return None
    position = phrases.get(rest, "center")
    return Caption(colour, shape, words[-2], size, position, says_size, bool(rest))
