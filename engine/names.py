"""Finding a configured name (a style, a LoRA, a model) as people type it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from engine.errors import InvalidRequest


def find_name(known: Iterable[str], name: str, field: str, noun: str) -> str:
    """Return `name` as configured (case aside); raise InvalidRequest on `field` offering the
    closest names (or all of them, or saying there are none)."""
    names = list(known)
    if name in names:
        return name
    folded = {key.casefold(): key for key in names}
    if name.casefold() in folded:
        return folded[name.casefold()]
    if not names:
        raise InvalidRequest(field, f"unknown {noun} {name!r}; this server has no {noun}s")
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    offer = f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(names)
    raise InvalidRequest(field, f"unknown {noun} {name!r}; {offer}")
