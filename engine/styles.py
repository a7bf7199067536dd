"""Styles: shared prompt templates from `[styles.<name>]`, applied to a request at admission.

A style wraps the prompt (`"{prompt}, oil painting"`), appends its negative prompt to the
user's, and brings defaults that sit under the user's own values and over the model's. The
expanded prompt is what the model sees, so it is what the job, the image and its PNG keep;
the style's name is kept beside it.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.config import StyleSettings
from engine.models import ModelDefaults
from engine.names import find_name

PLACEHOLDER = "{prompt}"


def find(styles: Mapping[str, StyleSettings], name: str) -> tuple[str, StyleSettings]:
    """Return a style and its name as configured (case aside); raise InvalidRequest offering
    the closest names."""
    key = find_name(styles, name, "style", "style")
    return key, styles[key]


def expand(style: StyleSettings, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """Return the prompt inside the template and the negative prompt with the style's appended.

    Idempotent: a prompt already inside the template (a re-roll of a styled job) and a
    negative prompt already ending with the style's are returned as they are.
    """
    before, _, after = style.prompt.partition(PLACEHOLDER)
    if not _is_wrapped(prompt, before.strip(), after.strip()):
        prompt = f"{before}{prompt}{after}"
    extra = style.negative_prompt.strip()
    if extra and not negative_prompt.strip().endswith(extra):
        negative_prompt = ", ".join(part for part in (negative_prompt.strip(), extra) if part)
    return prompt, negative_prompt


def _is_wrapped(prompt: str, before: str, after: str) -> bool:
    if not before and not after:
        return True
    text = prompt.strip()
    return len(text) > len(before) + len(after) and text.startswith(before) and text.endswith(after)


def defaults(style: StyleSettings) -> ModelDefaults:
    """Return the style's defaults (None where it leaves the model's)."""
    return ModelDefaults(
        style.width, style.height, style.steps, style.guidance, style.scheduler or None
    )
