"""What every view needs, kept on the app (never in module globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flask import current_app
from flask_limiter import Limiter

from engine import EngineBridge, EngineError, Library, Settings, StyleStatus
from web.security import Access

MODEL_CACHE_S = 10.0


@dataclass(frozen=True)
class ModelAbout:
    """What the pages say about a model: its name, label and what kind it is."""

    name: str
    is_demo: bool = False
    is_noise: bool = False
    title: str = ""
    kind: str = "txt2img"

    @property
    def label(self) -> str:
        """Return the name as the footer shows it."""
        if self.is_demo:
            return f"{self.name} (imagine's demo model)"
        if self.is_noise:
            return f"{self.name} (random tiny model: its images are noise)"
        return self.name


@dataclass(frozen=True)
class Editing:
    """Whether vary region, zoom out and pan can run here, and if not, why not."""

    is_available: bool
    note: str = ""


@dataclass(frozen=True)
class _Facts:
    """What the pages ask of the engine's status, kept for a few seconds."""

    at: float
    models: list[ModelAbout]
    editing: Editing
    styles: tuple[StyleStatus, ...] = ()


@dataclass(frozen=True)
class Context:
    """The settings, the engine bridge, the image library and the access rules of one app."""

    settings: Settings
    bridge: EngineBridge
    library: Library
    access: Access
    limiter: Limiter
    _facts: list[_Facts] = field(default_factory=list, compare=False)

    def model(self) -> ModelAbout:
        """Return the default model (the first of `models()`)."""
        return self.models()[0]

    def models(self) -> list[ModelAbout]:
        """Return the registry's models, default first, asked of the engine every few seconds."""
        return self._fresh().models

    def styles(self) -> tuple[StyleStatus, ...]:
        """Return the styles on offer (the engine's, so a reload shows here within seconds)."""
        return self._fresh().styles

    def editing(self) -> Editing:
        """Return whether an inpainting model serves vary region, zoom out and pan."""
        return self._fresh().editing

    def _fresh(self) -> _Facts:
        now = time.monotonic()
        if self._facts and now - self._facts[0].at < MODEL_CACHE_S:
            return self._facts[0]
        try:
            status = self.bridge.status()
        except (EngineError, TimeoutError):
            if self._facts:
                return self._facts[0]
            return _Facts(now, [ModelAbout("the configured model")], Editing(False))
        models = [
            ModelAbout(m.name, m.is_demo, m.is_noise, m.label, m.kind)
            for m in sorted(status.models, key=lambda m: not m.is_default)
        ] or [ModelAbout(status.model, status.is_demo, status.is_builtin_noise)]
        editing = Editing(status.inpaint_model is not None, status.outpaint_note)
        self._facts[:] = [_Facts(now, models, editing, status.styles)]
        return self._facts[0]


def ctx() -> Context:
    """Return the current app's context."""
    value: Context = current_app.extensions["imagine"]
    return value
