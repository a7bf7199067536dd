"""The one table from errors to the ephemeral text a Discord user reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.checks import MissingBotPermissions, NotModerator
from engine import (
    Banned,
    Blocked,
    BudgetExceeded,
    ConfigError,
    Forbidden,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
)


def duration(seconds: float) -> str:
    """Return a short human duration: 45 s, 12 min, 3 h 5 min."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _invalid(error: InvalidRequest) -> str:
    return f"That request can't run: `{error.field}`: {error.reason}."


_BLOCKED = {
    "blocklist": "Your prompt was refused: it matches a term moderators blocked (rule: blocklist).",
    "nsfw": "That prompt is only allowed in age-restricted channels (rule: nsfw).",
    "channel": "/imagine isn't enabled in this channel; ask a moderator which channels are open "
    "(rule: channel).",
}


def _blocked(error: Blocked) -> str:
    return _BLOCKED.get(error.rule, f"Your prompt was refused (rule: {error.rule}).")


def _banned(error: Banned) -> str:
    why = f" Reason: {error.reason}." if error.reason else ""
    if error.until is None:
        return f"You are banned from imagine.{why}"
    until = int(error.until)
    return f"You are banned from imagine until <t:{until}:f> (<t:{until}:R>).{why}"


def _queue_full(error: QueueFull) -> str:
    retry = duration(error.retry_after_s)
    if error.is_per_requester:
        return (
            f"You already have {error.waiting} job{'s' if error.waiting != 1 else ''} queued "
            f"(limit {error.limit}); "
            f"try again in {retry}, or /cancel one."
        )
    return f"The queue is full ({error.waiting} jobs, limit {error.limit}); try again in {retry}."


def _rate_limited(error: RateLimited) -> str:
    return f"Slow down: you can submit again in {duration(error.retry_after_s)}."


def _quota(error: QuotaExceeded) -> str:
    return (
        f"You've used your daily quota ({error.used} of {error.limit} images); "
        f"it frees up in {duration(error.resets_in_s)}."
    )


def _budget(error: BudgetExceeded) -> str:
    return (
        f"That request is too big: {error.cost:,} pixel-steps, the limit is {error.budget:,}. "
        "Lower the steps, the count or the size."
    )


def _missing(error: MissingBotPermissions) -> str:
    names = ", ".join(error.missing)
    return (
        f"I can't post results in this channel: I'm missing {names}. "
        "Ask a server admin to grant them, or use another channel. Nothing was queued."
    )


_TABLE: dict[type[BaseException], Callable[[Any], str]] = {
    InvalidRequest: _invalid,
    Blocked: _blocked,
    Banned: _banned,
    QueueFull: _queue_full,
    RateLimited: _rate_limited,
    QuotaExceeded: _quota,
    BudgetExceeded: _budget,
    NotFound: lambda e: f"That {e.kind} doesn't exist any more (`{e.ident}`).",
    Forbidden: lambda e: f"You can't {e.action}: only its requester or a moderator can.",
    ShuttingDown: lambda e: "imagine is restarting; try again in a minute.",
    ModelUnavailable: lambda e: f"The model isn't available: {e.reason}.",
    GenerationFailed: lambda e: f"Generation failed: {e.reason}.",
    ConfigError: lambda e: (
        f"Config not reloaded; the old one stays in force. `{e.key}`: {e.reason}"
    ),
    MissingBotPermissions: _missing,
    NotModerator: lambda e: "Only moderators can use this command.",
}


def text_for(error: BaseException) -> str | None:
    """Return the words for a known error, or None for an unexpected one."""
    for kind in type(error).__mro__:
        if kind in _TABLE:
            return _TABLE[kind](error)
    return None


def apology(reference: object) -> str:
    """Return the answer to an unexpected error (the details are in the log)."""
    return f"Sorry, something went wrong on my side (ref `{reference}`). It has been logged."
