"""The gallery's app factory: one Flask app per call, no global state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, request
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import RequestEntityTooLarge

from engine import EngineBridge, Settings
from web import account, api, edit, errors, gallery, generate, images, ops, security
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
    access = Access(settings)
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
    for blueprint in (gallery.bp, images.bp, generate.bp, edit.bp, account.bp, ops.bp):
        app.register_blueprint(blueprint)
    # The JSON API takes no cookies' word for it: JSON bodies (which a cross-site form cannot
    # send) and, for token-protected actions, a bearer token.
    csrf.exempt(api.bp)
    app.register_blueprint(api.bp)
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
    app.add_template_filter(_when, "when")
    return app


def _allow_uploads(limit: int) -> Callable[[], None]:
    def allow() -> None:
        if request.method == "POST" and request.endpoint in UPLOADS:
            request.max_content_length = limit

    return allow


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
