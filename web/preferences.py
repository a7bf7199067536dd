"""Your settings on the web: the same per-person defaults as Discord's `/settings`.

Only for people signed in with Discord (their Discord user is the requester, so the engine
keeps one set of defaults for both frontends and applies them to the generate form and the API
as it does to `/imagine`). Anonymous visitors have no defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue

from engine import ASPECTS, Delivery, InvalidRequest, Preferences, Requester, steps_ceiling
from web.context import ctx
from web.fields import _number

bp = Blueprint("preferences", __name__)

FIELDS = ("aspect", "model", "style", "steps", "guidance", "negative_prompt", "delivery")
DELIVERIES = {
    Delivery.CHANNEL: "In the channel",
    Delivery.PRIVATE: "Only me (an ephemeral response)",
    Delivery.DM: "By direct message",
}


def _signed_in() -> Requester:
    """Return the signed-in person's requester; send others to sign in (404 without it)."""
    access = ctx().access
    if not ctx().settings.web.discord_client_id:
        abort(404)
    if access.person() is None:
        abort(redirect("/auth/login?next=/settings", 303))
    return access.requester()


def _values(preferences: Preferences) -> dict[str, str]:
    data = preferences.to_dict()
    values = {k: "" if data.get(k) is None else str(data[k]) for k in FIELDS}
    if preferences.guidance is not None:
        values["guidance"] = f"{preferences.guidance:g}"
    values["remix"] = "on" if preferences.remix else ""
    return values


def _page(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    context = ctx()
    html = render_template(
        "settings.html",
        values=values,
        errors=errors,
        aspects=[(a, a) for a in ASPECTS],
        models=[(m.name, m.title or m.name) for m in context.models() if m.kind == "txt2img"],
        styles=[(s.name, s.label or s.name) for s in context.styles()],
        deliveries=[(str(d), label) for d, label in DELIVERIES.items()],
        steps_max=steps_ceiling(context.settings.limits),
    )
    return html, status


@bp.get("/settings")
def show() -> Any:
    """Show the signed-in person's defaults."""
    requester = _signed_in()
    return _page(_values(ctx().bridge.preferences(requester)), {})


@bp.post("/settings")
def save() -> ResponseReturnValue:
    """Save the form (checked by the engine, errors beside their field), or reset it all."""
    requester = _signed_in()
    context = ctx()
    if request.form.get("action") == "reset":
        context.bridge.set_preferences(requester, Preferences())
        flash("Your settings are the server's defaults again.", "note")
        return redirect("/settings", 303)
    values = {name: request.form.get(name, "") for name in FIELDS}
    values["remix"] = "on" if request.form.get("remix") else ""
    try:
        wanted = _preferences(values, context.bridge.preferences(requester))
        context.bridge.set_preferences(requester, wanted)
    except InvalidRequest as error:
        place = error.field if error.field in FIELDS else "form"
        return _page(values, {place: f"{error.field}: {error.reason}"}, 400)
    flash("Saved. They apply to /imagine and to the generate form.", "note")
    return redirect("/settings", 303)


def _preferences(values: dict[str, str], current: Preferences) -> Preferences:
    try:
        delivery = Delivery(values["delivery"] or Delivery.CHANNEL)
    except ValueError:
        raise InvalidRequest("delivery", "expected one of " + ", ".join(Delivery)) from None
    return dataclasses.replace(
        current,
        aspect=values["aspect"].strip() or None,
        model=values["model"].strip() or None,
        style=values["style"].strip() or None,
        steps=_number(values["steps"], "steps", int),
        guidance=_number(values["guidance"], "guidance", float),
        negative_prompt=values["negative_prompt"],
        delivery=delivery,
        remix=bool(values["remix"]),
    )
