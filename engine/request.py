"""Generation requests and requesters: parsing inline flags, normalising, validating.

Inline Midjourney-style flags (`--ar 3:2 --seed 7 --no cars --steps 30 --cfg 6 --style oil`) are
parsed here once, so Discord and the web agree on them.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

from engine import loras as loras_mod
from engine import styles as styles_mod
from engine.config import LimitSettings, LoraSettings, StyleSettings
from engine.errors import BudgetExceeded, InvalidRequest, TooLarge
from engine.models import ModelDefaults

SEED_MAX = 2**32 - 1
SCHEDULERS = ("DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM")
ASPECTS = ("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16")


class Kind(StrEnum):
    """What a job makes."""

    TXT2IMG = "txt2img"
    VARIATION = "variation"
    UPSCALE = "upscale"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"


INPUT_FIELDS = ("init_png", "mask_png")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. None means "use the default" until `resolve` fills it in."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    count: int | None = None
    scheduler: str | None = None
    kind: Kind = Kind.TXT2IMG
    source_image_id: str | None = None
    aspect: str | None = None
    model: str | None = None
    strength: float | None = None
    outpaint: str | None = None
    style: str | None = None
    # LoRAs as (name, weight): as asked, a weight of None is the LoRA's default; resolved at
    # admission to the configured names and weights.
    loras: tuple[tuple[str, float | None], ...] = ()
    # The person's own defaults (`/settings`) applied at admission, said with the result;
    # None until admitted, so a re-roll or remix of a job never applies them again.
    applied: tuple[str, ...] | None = None
    # Input images travel with the request until the job is stored (in its own table), then
    # are read back from SQLite for each run; they are never part of the JSON.
    init_png: bytes | None = field(default=None, repr=False, compare=False)
    mask_png: bytes | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping (without the input images)."""
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in INPUT_FIELDS
        }
        data["kind"] = str(self.kind)
        return data

    @property
    def inputs(self) -> tuple[bytes | None, bytes | None]:
        """Return (init image, mask) as PNG bytes, either may be None."""
        return self.init_png, self.mask_png

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Rebuild from `to_dict` output (extra keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)} - set(INPUT_FIELDS)
        values = {k: v for k, v in data.items() if k in names}
        values["kind"] = Kind(values.get("kind", Kind.TXT2IMG))
        if values.get("applied") is not None:
            values["applied"] = tuple(str(item) for item in values["applied"])
        if "loras" in values:  # JSON lists back to tuples: batch keys compare them
            values["loras"] = tuple((str(name), weight) for name, weight in values["loras"] or ())
        return cls(**values)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys may share one pipeline call."""
        return (
            self.model,
            self.kind,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.scheduler,
            self.strength,
            self.loras,
        )


@dataclass(frozen=True)
class Requester:
    """Who asks, and from where; limits and moderation are decided from it."""

    source: str
    user_id: str
    name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None
    role_ids: tuple[str, ...] = ()
    is_nsfw_channel: bool = False
    is_moderator: bool = False

    @property
    def key(self) -> str:
        """Return the identity the queue and quotas count by."""
        return f"{self.source}:{self.user_id}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        data = dataclasses.asdict(self)
        data["role_ids"] = list(self.role_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Requester:
        """Rebuild from `to_dict` output."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["role_ids"] = tuple(values.get("role_ids", ()))
        return cls(**values)


_CONTROL = re.compile(r"[\s]+")
_FLAG = re.compile(r"(?:^|\s)--([A-Za-z][\w-]*)")


def _is_stripped(char: str) -> bool:
    """Controls, lone surrogates and the BMP's format characters (NUL, RTL override, zero-width,
    BOM) are dropped; emoji tag sequences (astral format characters) and private-use
    characters are kept: they draw nothing harmful and people use them."""
    category = unicodedata.category(char)
    return category in ("Cc", "Cs") or (category == "Cf" and ord(char) <= 0xFFFF)


def normalise_text(text: str) -> str:
    """NFKC, drop control and format characters (NUL, RTL override, zero-width), fold spaces."""
    text = unicodedata.normalize("NFKC", text)
    kept = [(" " if char in "\t\n\r" else "") if _is_stripped(char) else char for char in text]
    return _CONTROL.sub(" ", "".join(kept)).strip()


@cache
def prompt_pattern() -> str:
    """Return a JSON Schema pattern for prompts the engine takes as they are: at least one
    character that survives normalising, and no inline `--flag` (the API has fields for those).

    Built from `normalise_text` itself, code point by code point, so it never disagrees.
    """
    gone = [code for code in range(0xD800) if not normalise_text(chr(code))]
    gone += [code for code in range(0xE000, 0x10000) if not normalise_text(chr(code))]
    ranges: list[list[int]] = []
    for code in gone:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    invisible = "".join(
        _escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}" for lo, hi in ranges
    )
    return rf"^(?![\s\S]*(?:^|\s)--[A-Za-z])[\s\S]*[^{invisible}][\s\S]*$"


def _escape(code: int) -> str:
    return f"\\u{code:04x}"


@dataclass
class _Flags:
    values: dict[str, str] = field(default_factory=dict)
    negatives: list[str] = field(default_factory=list)
    loras: list[str] = field(default_factory=list)


_FLAG_FIELDS = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "steps": "steps",
    "cfg": "guidance",
    "guidance": "guidance",
    "n": "count",
    "count": "count",
    "sampler": "scheduler",
    "w": "width",
    "h": "height",
    "model": "model",
    "style": "style",
}


def parse_flags(prompt: str) -> tuple[str, _Flags]:
    """Split inline `--flag value` pairs off the prompt text."""
    matches = list(_FLAG.finditer(prompt))
    if not matches:
        return prompt, _Flags()
    flags = _Flags()
    text = prompt[: matches[0].start()]
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(prompt)
        name = match.group(1).lower()
        value = prompt[match.end() : end].strip()
        if name == "no":
            flags.negatives.append(value)
        elif name == "lora":  # several allowed: `--lora a:0.8 --lora b`
            if not value:
                raise InvalidRequest("loras", "--lora needs NAME or NAME:WEIGHT")
            flags.loras.append(value)
        elif name in _FLAG_FIELDS:
            if not value:
                raise InvalidRequest(_FLAG_FIELDS[name], f"--{name} needs a value")
            flags.values[_FLAG_FIELDS[name]] = value
        else:
            known = ", ".join(f"--{n}" for n in [*_FLAG_FIELDS, "no", "lora"])
            raise InvalidRequest("prompt", f"unknown flag --{name}; known flags: {known}")
    return text.strip(), flags


def apply_flags(request: GenerationRequest) -> GenerationRequest:
    """Move inline flags from the prompt into the request fields (flags win over fields)."""
    text, flags = parse_flags(request.prompt)
    if not flags.values and not flags.negatives and not flags.loras:
        return request
    changes: dict[str, Any] = {"prompt": text}
    converters = {"seed": int, "steps": int, "count": int, "width": int, "height": int}
    for name, raw in flags.values.items():
        if name == "guidance":
            changes[name] = _to_number(raw, name, float)
        elif name in converters:
            changes[name] = _to_number(raw, name, int)
        elif name == "scheduler":
            changes[name] = _match_scheduler(raw)
        else:
            changes[name] = raw
    if flags.negatives:
        parts = [request.negative_prompt, *flags.negatives]
        changes["negative_prompt"] = ", ".join(p for p in parts if p.strip())
    if flags.loras:
        flagged = tuple(choice for text in flags.loras for choice in loras_mod.parse(text))
        changes["loras"] = (*request.loras, *flagged)
    return dataclasses.replace(request, **changes)


def _to_number(raw: str, name: str, kind: type) -> Any:
    try:
        return kind(raw.split()[0])
    except (ValueError, IndexError):
        word = "an integer" if kind is int else "a number"
        raise InvalidRequest(name, f"expected {word}, got {raw!r}") from None


def _match_scheduler(raw: str) -> str:
    for name in SCHEDULERS:
        if raw.strip().lower().replace("_", " ") == name.lower():
            return name
    raise InvalidRequest("scheduler", f"expected one of {', '.join(SCHEDULERS)}; got {raw!r}")


def aspect_size(aspect: str, native_px: int) -> tuple[int, int]:
    """Map an aspect ratio like 3:2 to a size around the model's native area."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*[:x/]\s*(\d{1,3})\s*", aspect)
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise InvalidRequest("aspect", f"expected W:H such as {', '.join(ASPECTS)}; got {aspect!r}")
    ratio = int(match.group(1)) / int(match.group(2))
    if not 0.25 <= ratio <= 4:
        raise InvalidRequest("aspect", f"expected a ratio between 1:4 and 4:1; got {aspect}")
    step = 64 if native_px >= 256 else 8
    width = max(step, round(native_px * math.sqrt(ratio) / step) * step)
    height = max(step, round(native_px / math.sqrt(ratio) / step) * step)
    return width, height


def resolve(
    request: GenerationRequest,
    limits: LimitSettings,
    native_px: int,
    default_scheduler: str,
    defaults: ModelDefaults | None = None,
    styles: Mapping[str, StyleSettings] | None = None,
    loras: Mapping[str, LoraSettings] | None = None,
) -> GenerationRequest:
    """Apply flags, the style and defaults, normalise text, and check every field against the
    limits.

    Defaults come from the style, then the model (its registry entry, then its folder), then
    from [limits]; the user's own values beat them all.
    """
    model = defaults or ModelDefaults()
    _check_raw_lengths(request, limits)
    # Flags are read from the text as typed: a full-width "－－ｘ" is words, never a flag.
    request = apply_flags(
        dataclasses.replace(request, negative_prompt=request.negative_prompt or "")
    )
    request = dataclasses.replace(
        request,
        prompt=normalise_text(request.prompt),
        negative_prompt=normalise_text(request.negative_prompt),
    )
    if not request.prompt:
        raise InvalidRequest("prompt", "must not be empty")
    if (request.style or "").strip():
        request, style_defaults = _apply_style(request, styles or {})
        model = style_defaults.over(model)
    elif request.style is not None:
        request = dataclasses.replace(request, style=None)
    width, height = _size(request, native_px, model, limits)
    resolved = dataclasses.replace(
        request,
        width=width,
        height=height,
        steps=_first(request.steps, model.steps, limits.default_steps),
        guidance=_first(request.guidance, model.guidance, limits.default_guidance),
        count=limits.default_count if request.count is None else request.count,
        scheduler=request.scheduler or model.scheduler or default_scheduler,
        seed=secrets.randbelow(SEED_MAX + 1) if request.seed is None else request.seed,
        loras=loras_mod.resolve(
            request.loras, loras or {}, str(request.model or ""), limits.max_loras
        ),
    )
    check(resolved, limits)
    return resolved


def _apply_style(
    request: GenerationRequest, styles: Mapping[str, StyleSettings]
) -> tuple[GenerationRequest, ModelDefaults]:
    """Wrap the prompt in the named style's template; return it and the style's defaults."""
    name, style = styles_mod.find(styles, str(request.style).strip())
    # The template is normalised like the prompt, so a re-roll sees its own words again.
    template = dataclasses.replace(
        style,
        prompt=normalise_text(style.prompt),
        negative_prompt=normalise_text(style.negative_prompt),
    )
    prompt, negative = styles_mod.expand(template, request.prompt, request.negative_prompt)
    styled = dataclasses.replace(
        request,
        prompt=normalise_text(prompt),
        negative_prompt=normalise_text(negative),
        style=name,
    )
    return styled, styles_mod.defaults(style)


def _check_raw_lengths(request: GenerationRequest, limits: LimitSettings) -> None:
    cap = limits.max_prompt_chars
    # Checked before normalising so a 10 MB prompt never reaches the NFKC pass.
    for name, text in (("prompt", request.prompt), ("negative_prompt", request.negative_prompt)):
        if not isinstance(text, str):
            raise InvalidRequest(name, "expected text")
        if len(text) > cap:
            raise InvalidRequest(name, f"expected at most {cap} characters, got {len(text)}")


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _size(
    request: GenerationRequest, native_px: int, model: ModelDefaults, limits: LimitSettings
) -> tuple[int, int]:
    """Return the size: asked for exactly (checked later), else an aspect or the default,
    fitted into the limits so that a choice people did not type can never be refused."""
    if request.width is not None and request.height is not None:
        return request.width, request.height
    if request.aspect and request.width is None and request.height is None:
        return fit_size(*aspect_size(request.aspect, native_px), limits)
    width = _first(request.width, model.width, native_px)
    height = _first(request.height, model.height, native_px)
    if request.width is not None or request.height is not None:
        return width, height
    return fit_size(width, height, limits)


def fit_size(width: int, height: int, limits: LimitSettings) -> tuple[int, int]:
    """Scale a size (keeping its ratio where the limits allow) into min/max size and pixels."""
    scale = 1.0
    if min(width, height) < limits.min_size_px:
        scale = limits.min_size_px / min(width, height)
    if max(width, height) * scale > limits.max_size_px:
        scale = limits.max_size_px / max(width, height)
    if width * height * scale * scale > limits.max_pixels:
        scale = math.sqrt(limits.max_pixels / (width * height))
    fitted = [
        min(limits.max_size_px, max(limits.min_size_px, int(side * scale) // 8 * 8))
        for side in (width, height)
    ]
    while fitted[0] * fitted[1] > limits.max_pixels and max(fitted) - 8 >= limits.min_size_px:
        larger = 0 if fitted[0] >= fitted[1] else 1
        fitted[larger] -= 8
    return fitted[0], fitted[1]


def check(request: GenerationRequest, limits: LimitSettings) -> None:
    """Raise InvalidRequest naming the first field outside its allowed range."""
    assert request.width is not None and request.height is not None
    for name in ("width", "height"):
        value = getattr(request, name)
        _int_in(name, value, limits.min_size_px, limits.max_size_px)
        if value % 8:
            raise InvalidRequest(name, f"expected a multiple of 8, got {value}")
    if request.width * request.height > limits.max_pixels:
        raise TooLarge(
            "width",
            f"width × height must be at most {limits.max_pixels} pixels, "
            f"got {request.width}×{request.height}",
        )
    _int_in("steps", request.steps, 1, limits.max_steps)
    _int_in("count", request.count, 1, limits.max_count)
    _int_in("seed", request.seed, 0, SEED_MAX)
    _float_in("guidance", request.guidance, 0.0, limits.max_guidance)
    if request.scheduler not in SCHEDULERS:
        raise InvalidRequest("scheduler", f"expected one of {', '.join(SCHEDULERS)}")
    _check_inputs(request)
    check_budget(request, limits.max_pixel_steps)


def _check_inputs(request: GenerationRequest) -> None:
    """The kinds that start from an image carry what they need (filled in by derive)."""
    if request.kind == Kind.TXT2IMG:
        return
    if request.kind == Kind.IMG2IMG:
        if request.init_png is None:
            raise InvalidRequest("image", "required for img2img: attach an image")
        _float_in("strength", request.strength, 0.05, 1.0)
        return
    if not request.source_image_id:
        raise InvalidRequest("source_image_id", f"required for a {request.kind}")
    if request.kind in (Kind.INPAINT, Kind.OUTPAINT) and None in request.inputs:
        raise InvalidRequest("mask", f"required for {request.kind}")


def check_budget(request: GenerationRequest, budget: int) -> None:
    """Raise BudgetExceeded when pixels × steps × count is above the budget."""
    assert request.width and request.height and request.steps and request.count
    cost = request.width * request.height * request.steps * request.count
    if cost > budget:
        raise BudgetExceeded(cost=cost, budget=budget)


def _int_in(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"expected an integer {lo}–{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, f"expected {lo}–{hi}, got {value}")


def _float_in(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(name, f"expected a number {lo:g}–{hi:g}, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidRequest(name, f"expected {lo:g}–{hi:g}, got {value}")
