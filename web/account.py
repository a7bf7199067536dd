"""Sign in with the admin token (to moderate, or to generate when generating needs the token).

Failed attempts are limited per client address (Flask-Limiter, only failures count) and logged.
The session keeps a fingerprint of the token it was signed in with: rotating
`IMAGINE_ADMIN_TOKEN` signs every admin session out.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, redirect, render_template, request, session

from web.context import ctx
from web.security import ADMIN_SESSION_KEY

log = logging.getLogger(__name__)

bp = Blueprint("account", __name__)

LOGIN_ATTEMPTS = "5 per minute; 20 per hour"


@bp.get("/login")
def login_form() -> str:
    """Show the token form."""
    return render_template("login.html", error=None)


@bp.post("/login")
def login() -> Any:
    """Check the admin token and remember it (as a fingerprint) in the signed session."""
    access = ctx().access
    token = request.form.get("token", "")
    if not access.token_matches(token):
        log.warning("failed admin sign-in from %s", request.remote_addr or "unknown")
        return render_template("login.html", error="That token is not right."), 403
    session[ADMIN_SESSION_KEY] = access.fingerprint(token)
    session.permanent = True
    return redirect("/", 303)


@bp.post("/logout")
def logout() -> Any:
    """Forget the admin sign-in (the client id stays)."""
    session.pop(ADMIN_SESSION_KEY, None)
    return redirect("/", 303)
