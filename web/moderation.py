"""The moderators' page: the audit log, ban and unban (the admin token, or a member who
moderates on Discord; the engine checks the requester again on every action)."""

from __future__ import annotations

import re

from flask import Blueprint, abort, redirect, render_template, request
from flask.typing import ResponseReturnValue

from engine import InvalidRequest
from web.context import ctx

bp = Blueprint("moderation", __name__)

AUDIT_ROWS = 100
MAX_REASON_CHARS = 200
USER_KEY = re.compile(r"(discord|web):[A-Za-z0-9_-]{1,64}")
# A Discord user id alone means their Discord identity (what /mod ban takes).
SNOWFLAKE = re.compile(r"[0-9]{1,20}")


def user_key(text: str) -> str:
    """Return the requester key a moderator typed (a Discord id or `source:id`)."""
    text = text.strip()
    if SNOWFLAKE.fullmatch(text):
        return f"discord:{text}"
    if USER_KEY.fullmatch(text):
        return text
    raise InvalidRequest("user", "expected a Discord user id or discord:<id> / web:<id>")


def _require_moderator() -> None:
    if not ctx().access.is_moderator():
        abort(403)


@bp.get("/mod")
def page() -> ResponseReturnValue:
    """Show the audit log and the ban forms."""
    _require_moderator()
    entries = ctx().library.audit(AUDIT_ROWS)
    return render_template("mod.html", entries=entries, error=None)


@bp.post("/mod/ban")
def ban() -> ResponseReturnValue:
    """Ban a user from generating, here and on Discord."""
    _require_moderator()
    context = ctx()
    reason = request.form.get("reason", "").strip()[:MAX_REASON_CHARS]
    context.bridge.ban(user_key(request.form.get("user", "")), None, reason, _by())
    return redirect("/mod", 303)


@bp.post("/mod/unban")
def unban() -> ResponseReturnValue:
    """Lift a ban."""
    _require_moderator()
    ctx().bridge.unban(user_key(request.form.get("user", "")), _by())
    return redirect("/mod", 303)


def _by():  # type: ignore[no-untyped-def]
    return ctx().access.requester()
