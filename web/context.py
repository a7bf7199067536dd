"""What every view needs, kept on the app (never in module globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flask import current_app
from flask_limiter import Limiter

from engine import EngineBridge, EngineError, Settings, Store
from web.security import Access

MODEL_CACHE_S = 10.0


@dataclass(frozen=True)
class ModelAbout:
    """What the pages say about the model that draws: its name and what kind it is."""

    name: str
    is_demo: bool = False
    is_noise: bool = False

    @property
    def label(self) -> str:
        """Return the name as the footer shows it."""
        if self.is_demo:
            return f"{self.name} (imagine's demo model)"
        if self.is_noise:
            return f"{self.name} (random tiny model: its images are noise)"
        return self.name


@dataclass(frozen=True)
class Context:
    """The settings, the engine bridge, the store and the access rules of one app."""

    settings: Settings
    bridge: EngineBridge
    store: Store
    access: Access
    limiter: Limiter
    _about: list[tuple[float, ModelAbout]] = field(default_factory=list, compare=False)

    def model(self) -> ModelAbout:
        """Return what runs now, asked of the engine at most every few seconds."""
        now = time.monotonic()
        if self._about and now - self._about[0][0] < MODEL_CACHE_S:
            return self._about[0][1]
        try:
            status = self.bridge.status()
        except (EngineError, TimeoutError):
            return self._about[0][1] if self._about else ModelAbout("the configured model")
        about = ModelAbout(status.model, status.is_demo, status.is_builtin_noise)
        self._about[:] = [(now, about)]
        return about


def ctx() -> Context:
    """Return the current app's context."""
    value: Context = current_app.extensions["imagine"]
    return value
