"""Per-requester limits: base limits with per-guild and per-role overrides applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from engine.config import LimitOverride, LimitSettings
from engine.request import Requester

# For each override key, which of two values is the more generous one.
_MORE_GENEROUS: dict[str, Callable[[Any, Any], Any]] = {
    "max_per_user": max,
    "cooldown_s": min,
    "daily_quota": lambda a, b: 0 if 0 in (a, b) else max(a, b),
    "max_steps": max,
    "max_count": max,
    "max_pixel_steps": max,
    "weight": max,
    "max_loras": max,
}


def effective(limits: LimitSettings, requester: Requester) -> LimitSettings:
    """Return the limits for one requester.

    The guild override replaces base values; then, among the requester's roles that have an
    override, the most generous value of each key wins (a quota of 0 means unlimited).
    """
    values: dict[str, Any] = {}
    guild = limits.guilds.get(requester.guild_id or "")
    if guild is not None:
        values.update(_set_fields(guild))
    role_values: dict[str, Any] = {}
    for role_id in requester.role_ids:
        override = limits.roles.get(role_id)
        if override is None:
            continue
        for key, value in _set_fields(override).items():
            previous = role_values.get(key)
            role_values[key] = value if previous is None else _MORE_GENEROUS[key](previous, value)
    values.update(role_values)
    return dataclasses.replace(limits, **values) if values else limits


def _set_fields(override: LimitOverride) -> dict[str, Any]:
    return {
        f.name: getattr(override, f.name)
        for f in dataclasses.fields(override)
        if getattr(override, f.name) is not None
    }
