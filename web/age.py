"""The age notice: with sign in with Discord configured, images from age-restricted channels
(and flagged ones) are shown, blurred, only to members of `web.guild_id` who confirmed it.

The confirmation is kept in the signed session for the person who gave it (another person
signing in on the same browser has not), and ends with the session.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from web.context import ctx
from web.images import AGE_KEY
from web.signin import local_path

bp = Blueprint("age", __name__)


def _member() -> str:
    """Return the signed-in member's user id; send others to sign in (404 without sign-in)."""
    context = ctx()
    if not context.settings.web.discord_client_id or context.settings.web.nsfw_images == "hide":
        abort(404)
    person = context.access.person()
    if person is None:
        abort(redirect(f"/auth/login?next=/age?next={local_path(request.args.get('next'))}", 303))
    if not context.access.is_member():
        abort(403)
    return person.user_id


@bp.get("/age")
def notice() -> ResponseReturnValue:
    """Show the notice and its confirm button."""
    _member()
    return render_template("age.html", next_path=local_path(request.args.get("next")))


@bp.post("/age")
def confirm() -> ResponseReturnValue:
    """Note the confirmation (CSRF-checked like every form) and go back."""
    session[AGE_KEY] = _member()
    return redirect(local_path(request.form.get("next")), 303)
