"""Prompt rules: blocklist (with evasion folding), the NSFW-channel rule and allowed channels."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.config import ModerationSettings
from engine.errors import Blocked
from engine.request import Requester

# Single letters separated by spaces or punctuation ("n u d e", "n.u.d.e") are joined again.
_SPACED_LETTERS = re.compile(r"\b(?:\w[\W_]{1,3}){2,}\w\b")


@dataclass(frozen=True)
class _Rule:
    term: str
    pattern: re.Pattern[str]


def _compile(terms: Iterable[str]) -> tuple[_Rule, ...]:
    rules = []
    for term in terms:
        if term.startswith("re:"):
            pattern = re.compile(term[3:], re.IGNORECASE)
        else:
            words = [re.escape(w) for w in term.casefold().split()]
            pattern = re.compile(r"\b" + r"\s+".join(words) + r"\b")
        rules.append(_Rule(term, pattern))
    return tuple(rules)


def fold(text: str) -> list[str]:
    """Return the forms of normalised text that rules are matched against."""
    lowered = text.casefold()
    joined = _SPACED_LETTERS.sub(lambda m: re.sub(r"[\W_]", "", m.group(0)), lowered)
    punctuation_free = re.sub(r"[\W_]+", " ", joined)
    return [lowered, joined, punctuation_free]


class Moderator:
    """Decide whether a (normalised) prompt may be queued for a requester."""

    def __init__(self, settings: ModerationSettings) -> None:
        self.settings = settings
        self._blocklist = _compile(settings.blocklist)
        self._nsfw = _compile(settings.nsfw_terms)

    def check_prompt(self, text: str, requester: Requester) -> None:
        """Raise Blocked naming the rule a prompt breaks."""
        forms = fold(text)
        term = _first_match(self._blocklist, forms)
        if term is not None:
            raise Blocked("blocklist", term)
        if requester.is_nsfw_channel:
            return
        term = _first_match(self._nsfw, forms)
        if term is not None:
            raise Blocked("nsfw", term)

    def check_channel(self, requester: Requester) -> None:
        """Raise Blocked when a Discord channel is not on the allowed list."""
        allowed = self.settings.allowed_channels
        if requester.source != "discord" or not allowed or requester.is_moderator:
            return
        if requester.channel_id is None:  # signed in to the gallery: no channel to be in
            return
        if requester.channel_id not in allowed:
            raise Blocked("channel", requester.channel_id or "")

    def is_moderator(self, requester: Requester) -> bool:
        """Return whether a requester holds a configured moderator role (or was marked so)."""
        roles = set(self.settings.moderator_roles)
        return requester.is_moderator or bool(roles.intersection(requester.role_ids))


def _first_match(rules: tuple[_Rule, ...], forms: list[str]) -> str | None:
    for rule in rules:
        if any(rule.pattern.search(form) for form in forms):
            return rule.term
    return None
