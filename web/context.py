"""What every view needs, kept on the app (never in module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_limiter import Limiter

from engine import EngineBridge, Settings, Store
from web.security import Access


@dataclass(frozen=True)
class Context:
    """The settings, the engine bridge, the store and the access rules of one app."""

    settings: Settings
    bridge: EngineBridge
    store: Store
    access: Access
    limiter: Limiter


def ctx() -> Context:
    """Return the current app's context."""
    value: Context = current_app.extensions["imagine"]
    return value
