"""Turn form fields and JSON bodies into a GenerationRequest; range checks stay in the engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from engine import GenerationRequest, ImageRecord, InvalidRequest, Kind, parse_loras

TEXT_FIELDS = ("prompt", "negative_prompt", "scheduler", "aspect", "model", "style")
INT_FIELDS = ("width", "height", "steps", "seed", "count")
FLOAT_FIELDS = ("guidance",)
API_FIELDS = (
    *TEXT_FIELDS, *INT_FIELDS, *FLOAT_FIELDS, "kind", "source_image_id", "strength", "outpaint",
    "loras",
)  # fmt: skip
API_KINDS = (Kind.TXT2IMG, Kind.VARIATION, Kind.UPSCALE, Kind.IMG2IMG, Kind.OUTPAINT)
OUTPAINTS = ("zoom_1.5", "zoom_2", "left", "right", "up", "down")


def from_form(form: Mapping[str, str], init_png: bytes | None = None) -> GenerationRequest:
    """Build a request from form text; an empty field means the default.

    An uploaded init image (`init_png`, already cleaned) or a gallery image named by
    `source_image_id` makes it an img2img request with the form's strength; the upload wins.
    """
    values: dict[str, Any] = {"prompt": form.get("prompt", "")}
    for name in TEXT_FIELDS[1:]:
        text = form.get(name, "").strip() if name != "negative_prompt" else form.get(name, "")
        values[name] = text or (None if name != "negative_prompt" else "")
    for name in INT_FIELDS:
        values[name] = _number(form.get(name, ""), name, int)
    for name in FLOAT_FIELDS:
        values[name] = _number(form.get(name, ""), name, float)
    if values["width"] is not None or values["height"] is not None:
        values["aspect"] = None
    source = form.get("source_image_id", "").strip()
    if init_png is not None or source:
        values["kind"] = Kind.IMG2IMG
        values["strength"] = _number(form.get("strength", ""), "strength", float)
        values["init_png"] = init_png
        values["source_image_id"] = None if init_png is not None else source
    return GenerationRequest(**values)


def _number(text: str, name: str, kind: type) -> Any:
    text = text.strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        word = "a whole number" if kind is int else "a number"
        raise InvalidRequest(name, f"expected {word}, got {text[:20]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(name, f"expected a finite number, got {text[:20]!r}")
    return value


def from_json(body: Any) -> GenerationRequest:
    """Build a request from a JSON object; unknown keys are refused by name."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "expected a JSON object")
    for key in body:
        if key not in API_FIELDS and key != "idempotency_key":
            raise InvalidRequest(str(key)[:40], f"unknown field; known: {', '.join(API_FIELDS)}")
    values = {k: _whole(v) if k in INT_FIELDS else v for k, v in body.items() if k in API_FIELDS}
    values.setdefault("prompt", "")
    if values.get("negative_prompt") is None:
        values["negative_prompt"] = ""
    for name in ("scheduler", "aspect", "source_image_id", "model", "style"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise InvalidRequest(name, "expected text")
    values["kind"] = _api_kind(values.get("kind"))
    values["loras"] = _api_loras(values.get("loras"))
    _check_image_fields(values)
    return GenerationRequest(**values)


def _api_loras(value: Any) -> tuple[tuple[str, float | None], ...]:
    """Read `["fox:0.8", "ink"]` (the engine checks names, weights and how many)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest("loras", "expected a list of NAME or NAME:WEIGHT texts")
    return tuple(choice for item in value for choice in parse_loras(item))


def _api_kind(value: Any) -> Kind:
    known = f"expected one of {', '.join(k.value for k in API_KINDS)}"
    if value is None:
        return Kind.TXT2IMG
    if not isinstance(value, str):
        raise InvalidRequest("kind", known)
    try:
        kind = Kind(value)
    except ValueError:
        raise InvalidRequest("kind", known) from None
    if kind not in API_KINDS:
        raise InvalidRequest("kind", known)
    return kind


def _check_image_fields(values: dict[str, Any]) -> None:
    """Refuse fields that do not belong to the kind, naming the first one."""
    kind = values["kind"]
    if kind == Kind.TXT2IMG and values.get("source_image_id") is not None:
        raise InvalidRequest(
            "source_image_id", "only for a variation, upscale, img2img or outpaint"
        )
    if kind != Kind.TXT2IMG and not values.get("source_image_id"):
        raise InvalidRequest("source_image_id", f"required for a {kind}")
    strength = values.get("strength")
    if strength is not None:
        if kind != Kind.IMG2IMG:
            raise InvalidRequest("strength", "only for kind img2img")
        if isinstance(strength, bool) or not isinstance(strength, int | float):
            raise InvalidRequest("strength", f"expected a number 0.05–1.0, got {strength!r}")
    move = values.get("outpaint")
    if move is not None and kind != Kind.OUTPAINT:
        raise InvalidRequest("outpaint", "only for kind outpaint")
    if kind == Kind.OUTPAINT and move not in OUTPAINTS:
        raise InvalidRequest("outpaint", f"expected one of {', '.join(OUTPAINTS)}")


def _whole(value: Any) -> Any:
    """JSON's 784.0 is the integer 784 (JSON Schema agrees); 784.5 stays a float, refused."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def prefill(image: ImageRecord) -> dict[str, str]:
    """Return form values that reproduce a stored image (its LoRAs as `--lora` flags)."""
    flags = "".join(f" --lora {name}:{weight:g}" for name, weight in image.lora_weights)
    return {
        "prompt": image.prompt + flags,
        "negative_prompt": image.negative_prompt,
        "width": str(image.width),
        "height": str(image.height),
        "steps": str(image.steps),
        "guidance": f"{image.guidance:g}",
        "seed": str(image.seed),
        "count": "1",
        "scheduler": image.scheduler,
        "model": image.model,
        "style": image.style,
    }


def form_values(request: GenerationRequest) -> dict[str, str]:
    """Return form values for a request (to show the form again after an error)."""
    data = dataclasses.asdict(request)
    return {k: "" if v is None else str(v) for k, v in data.items() if k in API_FIELDS}


def parse_day(text: str | None, name: str, end: bool = False) -> float | None:
    """Parse YYYY-MM-DD (UTC) into epoch seconds; `end` gives the next midnight."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(name, f"expected a date YYYY-MM-DD, got {text[:20]!r}") from None
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    if end:
        moment += dt.timedelta(days=1)
    return moment.timestamp()
