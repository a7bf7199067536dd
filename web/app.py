"""The gallery's app factory: one Flask app per call, no global state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from engine import EngineBridge, Settings
from web import (
    account,
    age,
    api,
    boards,
    bulk,
    edit,
    errors,
    gallery,
    generate,
    images,
    moderation,
    ops,
    preferences,
    security,
    signin,
)
from web.context import Context, ctx
from web.security import Access
from web.server import GalleryServer
from web.uploads import upload_body_bytes

MAX_FORM_PARTS = 100
FORM_BYTES_BASE = 64 * 1024

# Views that queue GPU work: the per-client rate limit applies to their POSTs.
RATE_LIMITED = (
    "generate.submit",
    "images.variation",
    "images.upscale",
    "edit.submit",
    "api.create_generation",
)
# Views whose forms carry an image file: their bodies may be as large as an upload allows.
UPLOADS = ("generate.submit", "edit.submit")


class LimitedRequest(Request):
    """A request whose url-encoded forms obey the same size and part limits as multipart ones."""

    def _load_form_data(self) -> None:
        is_urlencoded = self.mimetype == "application/x-www-form-urlencoded"
        limit = self.max_form_memory_size
        if is_urlencoded and limit is not None and (self.content_length or 0) > limit:
            raise RequestEntityTooLarge()
        super()._load_form_data()
        parts = self.max_form_parts
        if is_urlencoded and parts is not None and len(self.form) > parts:
            raise RequestEntityTooLarge()


def create_app(settings: Settings, engine_bridge: EngineBridge) -> Flask:
    """Build the gallery and JSON API over a running engine (through its bridge)."""
    debug = security.check_deployment(settings)
    app = Flask(__name__)
    app.request_class = LimitedRequest
    web = settings.web
    app.config.update(
        SECRET_KEY=security.secret_key(settings),
        MAX_CONTENT_LENGTH=web.max_body_bytes,
        # Form fields are two prompts and a few numbers: allow those, refuse field floods.
        MAX_FORM_MEMORY_SIZE=min(
            web.max_body_bytes, FORM_BYTES_BASE + 8 * settings.limits.max_prompt_chars
        ),
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=web.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=365),
        WTF_CSRF_TIME_LIMIT=None,
        JSON_SORT_KEYS=False,
        DEBUG=debug,
    )
    app.debug = debug
    app.url_map.merge_slashes = False  # "//etc/passwd" is a 404, not a redirect
    access = Access(settings, engine_bridge.library)
    limiter = Limiter(
        key_func=access.rate_key,
        app=app,
        storage_uri="memory://",
        headers_enabled=True,
        strategy="fixed-window",
    )
    app.extensions["imagine"] = Context(
        settings, engine_bridge, engine_bridge.library, access, limiter
    )
    # Before CSRFProtect's own hook, which reads the form (and so the body) first.
    app.before_request(_allow_uploads(upload_body_bytes(settings)))
    csrf = CSRFProtect(app)
    pages = (gallery.bp, images.bp, generate.bp, edit.bp, account.bp, ops.bp, signin.bp)
    people = (preferences.bp, moderation.bp, boards.bp, bulk.bp, age.bp)
    for blueprint in (*pages, *people):
        app.register_blueprint(blueprint)
    signin.install(app, settings)
    if web.trusted_proxies:
        # Only as many X-Forwarded-* hops as there are proxies of ours: the rest are forged.
        hops = web.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    # The JSON API takes no cookies' word for it: JSON bodies (which a cross-site form cannot
    # send) and, for token-protected actions, a bearer token.
    csrf.exempt(api.bp)
    # ...except where a signed-in person's session cookie authorises a change (see api.py).
    app.register_blueprint(api.bp)
    app.before_request(_members_only(access))
    for endpoint in RATE_LIMITED:
        view = app.view_functions[endpoint]
        limited = limiter.limit(web.generate_rate_limit, methods=["POST"])(view)
        app.view_functions[endpoint] = limited  # type: ignore[assignment]
    # Failed sign-ins only: a right token never counts against the client.
    app.view_functions["account.login"] = limiter.limit(  # type: ignore[assignment]
        account.LOGIN_ATTEMPTS,
        methods=["POST"],
        key_func=access.address_key,
        deduct_when=lambda response: response.status_code == 403,
    )(app.view_functions["account.login"])
    ops.install_metrics(app, engine_bridge)
    errors.register(app)
    security.install(app)
    app.context_processor(_template_globals)
    app.add_template_global(boards.my_boards, "my_boards")
    app.add_template_filter(_when, "when")
    return app


def _allow_uploads(limit: int) -> Callable[[], None]:
    def allow() -> None:
        if request.method == "POST" and request.endpoint in UPLOADS:
            request.max_content_length = limit

    return allow


# What an anonymous visitor of a members-only gallery may still reach: signing in and health.
OPEN_ENDPOINTS = frozenset(
    {
        "static",
        "signin.login",
        "signin.callback",
        "signin.page",
        "signin.logout",
        "account.login_form",
        "account.login",
        "account.logout",
        "ops.healthz",
        "ops.favicon",
    }
)


def _members_only(access: Access) -> Callable[[], ResponseReturnValue | None]:
    """With `web.browse = "members"`, answer everything but signing in with 401 to outsiders."""

    def guard() -> ResponseReturnValue | None:
        if access.settings.web.browse != "members" or request.endpoint in OPEN_ENDPOINTS:
            return None
        if access.may_browse():
            return None
        if errors.wants_json() or request.path.startswith("/files/"):
            return jsonify({"error": "sign_in", "message": "Sign in with Discord first."}), 401
        next_path = signin.local_path(request.full_path.rstrip("?"))
        return render_template("signin.html", error=None, next_path=next_path), 401

    return guard


def _template_globals() -> dict[str, Any]:
    context = ctx()
    return {
        "model": context.model(),
        "web": context.settings.web,
        "limits": context.settings.limits,
        "is_admin": context.access.is_admin(),
        "may_generate": context.access.may_generate(),
        "may_browse": context.access.may_browse(),
        "has_admin_token": bool(context.settings.secrets.admin_token),
        "has_signin": signin.signin() is not None,
        "person": context.access.person(),
        "is_moderator": context.access.is_moderator(),
    }


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def serve_gallery(settings: Settings, engine_bridge: EngineBridge) -> GalleryServer:
    """Return the gallery's server over a running engine (not started yet)."""
    app = create_app(settings, engine_bridge)
    return GalleryServer(app, engine_bridge, settings.web)
