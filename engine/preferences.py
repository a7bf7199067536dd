"""Your settings: one person's defaults for what they make (`/settings` on Discord).

Kept per requester key in SQLite and in memory, applied at admission to fresh requests only,
under everything the person typed (an option, a form field, an inline flag) and over the
style's, the model's and the server's defaults. A resolved request lists what was applied
(`GenerationRequest.applied`), so the result can say so and a re-roll or remix of it never
applies them twice. Values the requester's limits forbid at the time of use are saved, and
clamped at use with a note; values no limit could allow are refused when saved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.config import LimitSettings, Settings
from engine.errors import InvalidRequest
from engine.names import find_name
from engine.offload import Offload
from engine.request import ASPECTS, GenerationRequest, Kind, Requester, normalise_text
from engine.store import Store


class Delivery(StrEnum):
    """Where a person's Discord results go."""

    CHANNEL = "channel"  # in the channel, for everyone (the server's default)
    PRIVATE = "private"  # only they see it (an ephemeral response)
    DM = "dm"  # by direct message


@dataclass(frozen=True)
class Preferences:
    """One person's defaults; None (or "") leaves the server's."""

    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    model: str | None = None
    style: str | None = None
    delivery: Delivery = Delivery.CHANNEL
    remix: bool = False

    @property
    def is_default(self) -> bool:
        """Return whether nothing differs from the server's defaults."""
        return self == Preferences()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        data = dataclasses.asdict(self)
        data["delivery"] = str(self.delivery)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preferences:
        """Rebuild from `to_dict` output; unknown keys and unreadable values are dropped, so a
        row written by another version never stops anyone from generating."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        try:
            values["delivery"] = Delivery(values.get("delivery", Delivery.CHANNEL))
        except ValueError:
            values["delivery"] = Delivery.CHANNEL
        values["remix"] = bool(values.get("remix", False))
        values["negative_prompt"] = str(values.get("negative_prompt") or "")
        return cls(**values)


def steps_ceiling(limits: LimitSettings) -> int:
    """Return the most steps anyone on this server may use (base, guild or role override)."""
    overrides = [*limits.guilds.values(), *limits.roles.values()]
    return max([limits.max_steps] + [o.max_steps for o in overrides if o.max_steps is not None])


def validate(
    preferences: Preferences,
    settings: Settings,
    models: Iterable[str],
) -> Preferences:
    """Return the preferences normalised; raise InvalidRequest naming the field and range.

    `models` are the names of the text-to-image models a default may name.
    """
    limits = settings.limits
    changes: dict[str, Any] = {}
    if preferences.aspect is not None and preferences.aspect not in ASPECTS:
        raise InvalidRequest("aspect", f"expected one of {', '.join(ASPECTS)}")
    if preferences.steps is not None:
        ceiling = steps_ceiling(limits)
        steps = preferences.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= ceiling:
            raise InvalidRequest("steps", f"expected 1–{ceiling}, got {steps!r}")
    if preferences.guidance is not None:
        guidance = preferences.guidance
        top = limits.max_guidance
        if (
            isinstance(guidance, bool)
            or not isinstance(guidance, int | float)
            or not math.isfinite(guidance)
            or not 0 <= guidance <= top
        ):
            raise InvalidRequest("guidance", f"expected 0–{top:g}, got {guidance!r}")
        changes["guidance"] = float(guidance)
    negative = preferences.negative_prompt
    if len(negative) > limits.max_prompt_chars:
        raise InvalidRequest(
            "negative_prompt",
            f"expected at most {limits.max_prompt_chars} characters, got {len(negative)}",
        )
    changes["negative_prompt"] = normalise_text(negative)
    if preferences.model is not None:
        changes["model"] = find_name(models, preferences.model, "model", "model")
    if preferences.style is not None:
        changes["style"] = find_name(settings.styles, preferences.style, "style", "style")
    return dataclasses.replace(preferences, **changes)


def apply(
    request: GenerationRequest,
    preferences: Preferences,
    limits: LimitSettings,
    models: Iterable[str],
    styles: Iterable[str],
) -> GenerationRequest:
    """Fill a fresh text-to-image request's unset fields from a person's defaults.

    Flags must already be applied (a flag is what the person typed). A request that was
    resolved before (`applied` is not None: a re-roll, a remix, a job resumed after a restart)
    is returned as it is. A default that names a model or style no longer offered is skipped
    with a note; steps above the requester's limit are clamped to it with a note.
    """
    if request.applied is not None:
        return request
    if request.kind != Kind.TXT2IMG or preferences.is_default:
        return dataclasses.replace(request, applied=())
    changes: dict[str, Any] = {}
    applied: list[str] = []
    sized = request.width is not None or request.height is not None or request.aspect
    if preferences.aspect and not sized:
        changes["aspect"] = preferences.aspect
        applied.append(f"aspect {preferences.aspect}")
    if preferences.steps is not None and request.steps is None:
        steps = min(preferences.steps, limits.max_steps)
        changes["steps"] = steps
        if steps < preferences.steps:
            applied.append(f"steps {steps} (your {preferences.steps} is over the limit here)")
        else:
            applied.append(f"steps {steps}")
    if preferences.guidance is not None and request.guidance is None:
        guidance = min(preferences.guidance, limits.max_guidance)
        changes["guidance"] = guidance
        applied.append(f"guidance {guidance:g}")
    if preferences.negative_prompt and not (request.negative_prompt or "").strip():
        changes["negative_prompt"] = preferences.negative_prompt
        applied.append("negative prompt")
    for name, offered in (("model", set(models)), ("style", set(styles))):
        wanted = getattr(preferences, name)
        if not wanted or getattr(request, name) is not None:
            continue
        if wanted in offered:
            changes[name] = wanted
            applied.append(f"{name} {wanted}")
        else:
            applied.append(f"{name} {wanted} skipped (not offered now)")
    return dataclasses.replace(request, **changes, applied=tuple(applied))


class PreferenceBook:
    """Everyone's defaults: in memory for admission (no SQL on the loop), written through."""

    def __init__(self, store: Store, offload: Offload, clock: Callable[[], float]) -> None:
        self.store = store
        self.offload = offload
        self.clock = clock
        self._by_key: dict[str, Preferences] = {}

    def load(self, stored: Mapping[str, Mapping[str, Any]]) -> None:
        """Take the stored rows (at start)."""
        self._by_key = {key: Preferences.from_dict(data) for key, data in stored.items()}

    def of(self, requester: Requester) -> Preferences:
        """Return a requester's defaults (the server's when they set none)."""
        return self._by_key.get(requester.key, Preferences())

    async def save(self, requester: Requester, preferences: Preferences) -> Preferences:
        """Store a requester's defaults (already validated); the server's remove the row."""
        data = None if preferences.is_default else preferences.to_dict()
        await self.offload.run(self.store.set_preferences, requester.key, data, self.clock())
        if data is None:
            self._by_key.pop(requester.key, None)
        else:
            self._by_key[requester.key] = preferences
        return preferences
