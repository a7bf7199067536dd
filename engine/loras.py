"""LoRAs: `[loras.<name>]` adapters on top of a model, picked per request by name and weight.

A request names LoRAs as `NAME` or `NAME:0.8` (the `--lora` flag, the `lora:` option, the API's
`loras` list); admission turns that into `((name, weight), ...)`, checked against the config:
known names (the closest are offered), weights in `WEIGHT_MIN`–`WEIGHT_MAX`, at most
`limits.max_loras`, and only LoRAs that fit the job's model. Jobs batch together only with the
same LoRAs and weights. No torch here: a LoRA's fit is read from safetensors headers (the
shapes its `lora_A`/`lora_B` pairs expect against the model's own weights), and the worker
loads each LoRA onto each model once when the model loads, so a LoRA that does not fit is
refused at start or reload, never in the middle of a job.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.config import LoraSettings
from engine.errors import ConfigError, InvalidRequest
from engine.names import find_name

WEIGHT_MIN, WEIGHT_MAX = -2.0, 2.0
MAX_LORAS = 8  # the most `limits.max_loras` allows, and what a box takes in one batch
HEADER_MAX_BYTES = 100 * 1024 * 1024  # safetensors' own bound on a header

LoraChoice = tuple[str, float]
_CHOICE = re.compile(r"([^\s:,]+)(?::([^\s,]*))?")
_COMPONENTS = {"unet": "unet", "text_encoder": "text_encoder"}


def parse(text: str) -> tuple[tuple[str, float | None], ...]:
    """Read `NAME`, `NAME:0.8`, or several of them (comma or space apart); None: its default
    weight. Raise InvalidRequest naming the weight range."""
    choices = []
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        match = _CHOICE.fullmatch(part)
        if match is None:
            raise InvalidRequest("loras", f"expected NAME or NAME:WEIGHT, got {part!r}")
        name, raw = match.group(1), match.group(2)
        choices.append((name, None if raw is None else _weight(name, raw)))
    return tuple(choices)


def _weight(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidRequest("loras", f"LoRA {name}: expected a weight {_span()}, got {raw!r}")
    return value


def _span() -> str:
    return f"{WEIGHT_MIN:g}–{WEIGHT_MAX:g}"


def find(loras: Mapping[str, LoraSettings], name: str) -> tuple[str, LoraSettings]:
    """Return a LoRA and its name as configured (case aside); raise InvalidRequest offering the
    closest names."""
    key = find_name(loras, name, "loras", "LoRA")
    return key, loras[key]


def fits(lora: LoraSettings, model: str) -> bool:
    """Return whether a LoRA may be used with a model (`models` empty: every model)."""
    return not lora.models or model in lora.models


def resolve(
    wanted: Sequence[Any],
    loras: Mapping[str, LoraSettings],
    model: str,
    max_loras: int,
) -> tuple[LoraChoice, ...]:
    """Return the request's LoRAs as (configured name, weight); raise InvalidRequest on an
    unknown name, a weight out of range, too many, one named twice, or one not for `model`."""
    if not isinstance(wanted, list | tuple):
        raise InvalidRequest("loras", "expected a list of NAME or NAME:WEIGHT")
    if len(wanted) > max_loras:
        most = f"at most {max_loras}" if max_loras else "none"
        raise InvalidRequest(
            "loras", f"expected {most} LoRAs per image (limits.max_loras), got {len(wanted)}"
        )
    resolved: list[LoraChoice] = []
    for choice in wanted:
        name, weight = _pair(choice)
        key, lora = find(loras, name)
        if any(key == seen for seen, _ in resolved):
            raise InvalidRequest("loras", f"LoRA {key} is named twice")
        if not fits(lora, model):
            raise InvalidRequest(
                "loras",
                f"LoRA {key} does not fit model {model}; it fits {', '.join(lora.models)}",
            )
        weight = lora.weight if weight is None else weight
        if not WEIGHT_MIN <= weight <= WEIGHT_MAX:
            raise InvalidRequest(
                "loras", f"LoRA {key}: expected a weight {_span()}, got {weight:g}"
            )
        resolved.append((key, float(weight)))
    return tuple(resolved)


def _pair(choice: Any) -> tuple[str, float | None]:
    """Return (name, weight or None) from ("name", 0.8), ["name", 0.8], "name:0.8" or "name"."""
    if isinstance(choice, str):
        parsed = parse(choice)
        if len(parsed) != 1:
            raise InvalidRequest("loras", f"expected NAME or NAME:WEIGHT, got {choice!r}")
        return parsed[0]
    if isinstance(choice, list | tuple) and len(choice) == 2 and isinstance(choice[0], str):
        weight = choice[1]
        if weight is None:
            return choice[0], None
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidRequest("loras", f"LoRA {choice[0]}: expected a weight {_span()}")
        return choice[0], _weight(choice[0], str(weight))
    raise InvalidRequest("loras", f"expected NAME or NAME:WEIGHT, got {choice!r}")


def weight_text(weight: float) -> str:
    """Return a weight as people and A1111 write it (0.8, 1, -0.5)."""
    return f"{weight:g}"


def to_text(choices: Iterable[LoraChoice]) -> str:
    """Return LoRAs as stored on an image and shown to people: `name:0.8 other:1`."""
    return " ".join(f"{name}:{weight_text(weight)}" for name, weight in choices)


def from_text(text: str) -> tuple[LoraChoice, ...]:
    """Read `to_text` output back (names never hold spaces or colons)."""
    pairs = []
    for part in text.split():
        name, _, weight = part.rpartition(":")
        pairs.append((name, float(weight)))
    return tuple(pairs)


def prompt_tags(choices: Iterable[LoraChoice]) -> str:
    """Return the LoRAs as A1111 writes them into the prompt: `<lora:name:0.8>`."""
    return " ".join(f"<lora:{name}:{weight_text(weight)}>" for name, weight in choices)


# -- fitting the model ----------------------------------------------------------------------


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Return every tensor's shape from a safetensors file's header (its weights unread).

    Raise ValueError when the file is not safetensors.
    """
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError("too short for a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if not 2 <= size <= HEADER_MAX_BYTES:
            raise ValueError("not a safetensors file (bad header length)")
        raw = handle.read(size)
    try:
        header = json.loads(raw)
    except ValueError as error:
        raise ValueError("not a safetensors file (header is not JSON)") from error
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not a table)")
    shapes = {}
    for key, value in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(value, dict) or not isinstance(value.get("shape"), list):
            raise ValueError(f"not a safetensors file (tensor {key!r} has no shape)")
        shapes[key] = tuple(int(n) for n in value["shape"])
    return shapes


def check_file(name: str, lora: LoraSettings) -> dict[str, tuple[int, ...]]:
    """Return a LoRA file's tensor shapes; raise ConfigError naming `loras.<name>.path`."""
    path = Path(lora.path)
    key = f"loras.{name}.path"
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(key, f"expected a .safetensors file, got {path.name!r}")
    try:
        shapes = read_shapes(path)
    except FileNotFoundError:
        raise ConfigError(key, f"no such file: {path}") from None
    except OSError as error:
        raise ConfigError(key, f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(key, f"{path.name}: {error}") from None
    if not any(".lora" in k or "lora_" in k for k in shapes):
        raise ConfigError(key, f"{path.name} holds no LoRA weights")
    return shapes


def misfit(shapes: Mapping[str, tuple[int, ...]], model_folder: Path) -> str | None:
    """Return why a LoRA (diffusers/peft keys) does not fit a diffusers model folder, or None.

    Each `lora_A` must take the module's input shape and each `lora_B` give its output size.
    Keys in other layouts (kohya's `lora_unet_…`) are left to the worker's load check.
    """
    models: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        component, _, rest = key.partition(".")
        module, part = _split_lora_key(rest)
        if component not in _COMPONENTS or module is None:
            continue
        if component not in models:
            models[component] = _folder_shapes(model_folder / _COMPONENTS[component])
        weights = models[component]
        if not weights:
            continue  # no readable safetensors there: the worker's load check decides
        target = weights.get(f"{module}.weight")
        if target is None:
            return f"{component} has no module {module}"
        if part == "A" and tuple(shape[1:]) != tuple(target[1:]):
            return f"{key} expects input {list(shape[1:])}, the model has {list(target[1:])}"
        if part == "B" and shape[0] != target[0]:
            return f"{key} gives {shape[0]} outputs, the model's {module} has {target[0]}"
    return None


def _split_lora_key(rest: str) -> tuple[str | None, str]:
    for suffix, part in (
        (".lora_A.weight", "A"),
        (".lora_B.weight", "B"),
        (".lora.down.weight", "A"),
        (".lora.up.weight", "B"),
    ):
        if rest.endswith(suffix):
            return rest[: -len(suffix)], part
    return None, ""


def _folder_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        try:
            shapes.update(read_shapes(file))
        except (OSError, ValueError):
            continue
    return shapes


def check(
    loras: Mapping[str, LoraSettings],
    model_folders: Mapping[str, Path | None],
) -> None:
    """Refuse LoRAs whose file is not safetensors, whose `models` names no model, or that do
    not fit a model they are for; raise ConfigError with the LoRA's key."""
    for name, lora in loras.items():
        shapes = check_file(name, lora)
        for model in lora.models:
            if model not in model_folders:
                known = ", ".join(model_folders)
                raise ConfigError(
                    f"loras.{name}.models", f"unknown model {model!r}; known: {known}"
                )
        for model, folder in model_folders.items():
            if not fits(lora, model) or folder is None or not folder.is_dir():
                continue
            reason = misfit(shapes, folder)
            if reason is not None:
                raise ConfigError(f"loras.{name}", f"does not fit model {model}: {reason}")
