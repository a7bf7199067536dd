"""Sign in with the admin token (to moderate, or to generate when generating needs the token)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, session

from web.context import ctx

bp = Blueprint("account", __name__)


@bp.get("/login")
def login_form() -> str:
    """Show the token form."""
    return render_template("login.html", error=None)


@bp.post("/login")
def login() -> Any:
    """Check the admin token and remember the result in the signed session."""
    access = ctx().access
    if not access.token_matches(request.form.get("token", "")):
        return render_template("login.html", error="That token is not right."), 403
    session["admin_token_ok"] = True
    session.permanent = True
    return redirect("/", 303)


@bp.post("/logout")
def logout() -> Any:
    """Forget the admin sign-in (the client id stays)."""
    session.pop("admin_token_ok", None)
    return redirect("/", 303)
