"""The model registry: which models this server offers, their defaults, and facts about each.

`[models.<name>]` tables in config (path, kind, label, default size/steps/guidance/scheduler),
or `engine.model` alone as the shorthand for one default model. Facts that only the weights can
tell (native size, inpainting UNet, the A1111 model hash) come from reading the model's config
files here, without torch, and from the workers once they load it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import BUILTIN_DEMO, BUILTIN_TINY, LoraSettings, ModelSettings, Settings
from engine.errors import InvalidRequest

log = logging.getLogger(__name__)

BUILTIN_DEMO_INPAINT = "builtin:demo-inpaint"
DEMO_FOLDER = Path(__file__).parent / "demo" / "model"
DEMO_INPAINT_FOLDER = Path(__file__).parent / "demo" / "model-inpaint"
DEFAULTS_FILE = "imagine.json"  # a model folder's own defaults (the demo models ship one)
HASHES_FILE = "model-hashes.json"
_BUILTIN_NAMES = {
    BUILTIN_DEMO: "imagine-demo",
    BUILTIN_DEMO_INPAINT: "imagine-demo-inpaint",
    BUILTIN_TINY: "imagine-tiny-random",
}


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model defaults; None leaves the [limits] default."""

    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None

    def over(self, other: ModelDefaults) -> ModelDefaults:
        """Return these defaults with the gaps filled from `other`."""
        values = {
            name: getattr(self, name) if getattr(self, name) is not None else getattr(other, name)
            for name in ("width", "height", "steps", "guidance", "scheduler")
        }
        return ModelDefaults(**values)


@dataclass(frozen=True)
class ModelFacts:
    """What a model is, once its files have been read: plain data, sent by any worker."""

    name: str
    native_px: int = 512
    kind: str = "txt2img"
    is_demo: bool = False
    is_noise: bool = False
    model_hash: str = ""
    defaults: ModelDefaults = field(default_factory=ModelDefaults)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        data = {k: v for k, v in self.__dict__.items() if k != "defaults"}
        return {**data, "defaults": dict(self.defaults.__dict__)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelFacts:
        """Rebuild from `to_dict` output."""
        defaults = ModelDefaults(**data.get("defaults", {}))
        return cls(**{k: v for k, v in data.items() if k != "defaults"}, defaults=defaults)


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: where the weights are and what the operator chose for it."""

    name: str
    path: str
    kind: str = "txt2img"
    label: str = ""
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    config_key: str = "engine.model"  # where the operator set the path (for error hints)

    @property
    def display(self) -> str:
        """Return the name people see."""
        return self.label or self.name

    @property
    def is_builtin(self) -> bool:
        """Return whether the weights ship with (or are built by) imagine."""
        return self.path.startswith("builtin:")


def name_for(path: str) -> str:
    """Return a registry name for a model path: never a full filesystem path."""
    if path in _BUILTIN_NAMES:
        return _BUILTIN_NAMES[path]
    stem = Path(path.rstrip("/")).name
    if stem.endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    return stem or "model"


def _spec(name: str, model: ModelSettings) -> ModelSpec:
    defaults = ModelDefaults(
        model.width, model.height, model.steps, model.guidance, model.scheduler or None
    )
    return ModelSpec(
        name, model.path, model.kind, model.label, defaults, config_key=f"models.{name}.path"
    )


class ModelRegistry:
    """The models on offer, the default one, and what is known about each."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        default: str,
        loras: dict[str, LoraSettings] | None = None,
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        if default not in self._specs:
            raise ValueError(f"default model {default!r} is not in the registry")
        self.default_name = default
        self._facts: dict[str, ModelFacts] = {}
        # Replaced whole on reload (workers read it from their threads: one reference swap).
        self.loras: dict[str, LoraSettings] = dict(loras or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """Build the registry from `[models]`, or from `engine.model` alone."""
        if settings.models:
            specs = [_spec(name, model) for name, model in settings.models.items()]
            wanted = settings.engine.model
            default = wanted if wanted in settings.models else specs[0].name
            return cls(specs, default, settings.loras)
        path = settings.engine.model
        specs = [ModelSpec(name_for(path), path)]
        if path == BUILTIN_DEMO and (DEMO_INPAINT_FOLDER / "model_index.json").exists():
            # The offline default offers its inpainting twin too (zoom out, pan, vary region).
            specs.append(ModelSpec(name_for(BUILTIN_DEMO_INPAINT), BUILTIN_DEMO_INPAINT, "inpaint"))
        return cls(specs, specs[0].name, settings.loras)

    @property
    def default(self) -> ModelSpec:
        """Return the default model."""
        return self._specs[self.default_name]

    def specs(self) -> list[ModelSpec]:
        """Return every entry, in config order."""
        return list(self._specs.values())

    def names(self) -> list[str]:
        """Return every model name, in config order."""
        return list(self._specs)

    def get(self, name: str | None) -> ModelSpec:
        """Return a model by name (None: the default); raise InvalidRequest offering the closest."""
        if name is None or name == "":
            return self.default
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        close = difflib.get_close_matches(name, self._specs, n=3, cutoff=0.4)
        offer = f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(self._specs)
        raise InvalidRequest("model", f"unknown model {name!r}; {offer}")

    def label(self, name: str) -> str:
        """Return the name people see for a model (its name if it left the registry)."""
        spec = self._specs.get(name)
        return spec.display if spec is not None else name

    def inpaint_model(self) -> ModelSpec | None:
        """Return the first inpainting model (outpainting and vary region need one), or None."""
        return next((spec for spec in self._specs.values() if spec.kind == "inpaint"), None)

    def learn(self, facts: ModelFacts) -> None:
        """Keep what a worker found out about a model."""
        if facts.name in self._specs:
            self._facts[facts.name] = facts

    def facts(self, name: str) -> ModelFacts:
        """Return what is known about a model (its config files' word until a worker loads it)."""
        known = self._facts.get(name)
        if known is not None:
            return known
        spec = self.get(name)
        return ModelFacts(name=name, kind=spec.kind)

    def defaults(self, name: str) -> ModelDefaults:
        """Return a model's defaults: the operator's, then the model folder's own."""
        return self.get(name).defaults.over(self.facts(name).defaults)


def source_folder(path: str, data_dir: Path) -> Path | None:
    """Return the local folder (or file) a model path names, or None for a hub id."""
    if path == BUILTIN_DEMO:
        return DEMO_FOLDER
    if path == BUILTIN_DEMO_INPAINT:
        return DEMO_INPAINT_FOLDER
    if path == BUILTIN_TINY:
        return data_dir / "models" / "tiny"
    local = Path(path).expanduser()
    return local if local.exists() else None


def inspect(spec: ModelSpec, data_dir: Path) -> ModelFacts:
    """Read a model's facts from its files (no torch): native size, kind, defaults, hash."""
    folder = source_folder(spec.path, data_dir)
    facts = ModelFacts(
        name=spec.name,
        kind=spec.kind,
        is_demo=spec.path in (BUILTIN_DEMO, BUILTIN_DEMO_INPAINT),
        is_noise=spec.path == BUILTIN_TINY,
    )
    if folder is None or not folder.is_dir():
        return replace(facts, model_hash=model_hash(folder, data_dir) if folder else "")
    unet = _json(folder / "unet" / "config.json")
    vae = _json(folder / "vae" / "config.json")
    if unet and vae:
        factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        facts = replace(facts, native_px=int(unet.get("sample_size", 64)) * factor)
        if int(unet.get("in_channels", 4)) == 9:
            facts = replace(facts, kind="inpaint")
    own = _json(folder / DEFAULTS_FILE).get("defaults", {})
    known = {k: own[k] for k in ("width", "height", "steps", "guidance", "scheduler") if k in own}
    return replace(facts, defaults=ModelDefaults(**known), model_hash=model_hash(folder, data_dir))


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_hash(path: Path, data_dir: Path) -> str:
    """Return A1111's short model hash: the first 10 hex digits of the weights' SHA-256.

    A1111 hashes a checkpoint file; a diffusers folder has none, so its UNet weights stand in.
    Hashes are kept in the data folder by path, size and mtime (SD 2.1's UNet is 3.5 GB).
    """
    target = path
    if path.is_dir():
        target = path / "unet" / "diffusion_pytorch_model.safetensors"
        if not target.exists():
            target = next(iter(sorted(path.glob("unet/*.safetensors"))), target)
    try:
        stat = target.stat()
    except OSError:
        return ""
    key = f"{target.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    cache_path = data_dir / HASHES_FILE
    cache = _json(cache_path)
    if isinstance(cache.get(key), str):
        return str(cache[key])
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    short = digest.hexdigest()[:10]
    cache[key] = short
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temp = cache_path.with_suffix(".tmp")
        temp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(temp, cache_path)
    except OSError as error:  # a read-only data folder only costs a rehash next start
        log.info("model hash not cached: %s", error)
    return short
