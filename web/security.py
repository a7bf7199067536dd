"""Who the client is, what they may do, and the walls around every response."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from flask import Flask, Response, abort, current_app, g, request, session

from engine import ConfigError, Library, Requester, Settings
from web.people import Person, current_person

log = logging.getLogger(__name__)

SECRET_FILE = "web-secret-key"
ADMIN_ID = "admin"
ADMIN_SESSION_KEY = "admin"
_CLIENT_ID = re.compile(r"[0-9a-f]{16}")
_NONCE = re.compile(r"[0-9a-f]{32}")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def secret_key(settings: Settings) -> str:
    """Return the secret key from the environment, else one generated once in the data folder."""
    if settings.secrets.secret_key:
        return settings.secrets.secret_key
    path = Path(settings.data_path) / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 32:
            return text
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # O_EXCL: two processes starting at once agree on the first key written.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key)
    return key


def is_loopback(host: str) -> bool:
    """Return whether a bind address only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_deployment(settings: Settings) -> bool:
    """Refuse debug outside development; warn when exposed without an admin token.

    Development means bound to a loopback address. Return whether debug is on.
    """
    web = settings.web
    if web.debug and not is_loopback(web.host):
        raise ConfigError("web.debug", f"debug is only allowed on 127.0.0.1, not on {web.host}")
    if not is_loopback(web.host) and not settings.secrets.admin_token:
        log.warning(
            "the gallery listens on %s without an admin token (%s unset): nobody can moderate it",
            web.host,
            web.admin_token_env,
        )
    if web.debug:
        log.warning("web.debug is on: tracebacks are shown; never use it in production")
    return web.debug


HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def add_headers(response: Response) -> Response:
    """Set the security headers every response carries (the event streams send them too)."""
    headers = response.headers
    for name, value in HEADERS.items():
        if name in ("Content-Security-Policy", "Permissions-Policy"):
            headers.setdefault(name, value)
        else:
            headers[name] = value
    return response


class Access:
    """Decide identity and rights from the signed session cookie or an API token."""

    def __init__(self, settings: Settings, library: Library | None = None) -> None:
        self.settings = settings
        self.library = library

    def token_requester(self) -> Requester | None:
        """Return who this request's personal API token acts as (looked up each request, so a
        revoked token stops at once), or None."""
        if "token_requester" not in g:
            token = self.bearer()
            found = self.library.token_requester(token) if token and self.library else None
            g.token_requester = found
        value: Requester | None = g.token_requester
        return value

    def token_matches(self, token: str) -> bool:
        """Return whether a token equals the configured admin token (constant time)."""
        expected = self.settings.secrets.admin_token
        return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())

    def bearer(self) -> str:
        """Return the bearer token of this request, or ''."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def fingerprint(self, token: str) -> str:
        """Return what a session keeps of the admin token: a hash keyed by the app's secret key
        (the session cookie is signed, not encrypted), never the token."""
        key = str(current_app.config["SECRET_KEY"]).encode()
        return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()[:32]

    def is_admin(self) -> bool:
        """Return whether this request carries admin rights (login or bearer token).

        A signed-in session counts only while the token it signed in with is still the one
        configured: rotating the token signs everyone out.
        """
        expected = self.settings.secrets.admin_token
        kept = session.get(ADMIN_SESSION_KEY)
        is_kept = isinstance(kept, str) and bool(expected)
        if is_kept and hmac.compare_digest(str(kept), self.fingerprint(expected)):
            return True
        token = self.bearer()
        return bool(token) and self.token_matches(token)

    def person(self) -> Person | None:
        """Return the person signed in with Discord (only while sign-in is configured)."""
        if not self.settings.web.discord_client_id:
            return None
        return current_person(session)

    def is_member(self) -> bool:
        """Return whether this client is a member of `web.guild_id` (signed in, or by the
        personal token of one)."""
        by_token = self.token_requester()
        if by_token is not None:
            guild = self.settings.web.guild_id
            return bool(guild) and by_token.guild_id == guild
        person = self.person()
        return person is not None and person.is_member

    def is_moderator(self) -> bool:
        """Return whether this client moderates: the admin token, or a member who moderates on
        Discord (a role in `moderation.moderator_roles`, or Manage Messages in the guild)."""
        if self.is_admin():
            return True
        if not self.is_member():
            return False
        who = self.requester()
        roles = set(self.settings.moderation.moderator_roles)
        return who.is_moderator or bool(roles.intersection(who.role_ids))

    def client_id(self) -> str:
        """Return this browser's stable id, kept in the signed session cookie."""
        value = session.get("cid")
        if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
            value = secrets.token_hex(8)
            session["cid"] = value
            session.permanent = True
        return value

    def requester(self) -> Requester:
        """Return the engine's view of who asks."""
        if self.is_admin():
            return Requester(source="web", user_id=ADMIN_ID, name="admin", is_moderator=True)
        by_token = self.token_requester()
        if by_token is not None:
            return by_token
        person = self.person()
        if person is not None:
            return person.requester(self.settings.web.guild_id)
        client = self.client_id()
        return Requester(source="web", user_id=client, name=f"web-{client[:6]}")

    def api_requester(self) -> Requester:
        """Return who calls the JSON API: the browser's id, else one per client address.

        API clients rarely keep cookies; a fresh id per request would dodge per-user limits and
        make an Idempotency-Key retry queue a second job.
        """
        if self.is_admin() or self.token_requester() or self.person():
            return self.requester()
        if isinstance(session.get("cid"), str):
            return self.requester()
        address = request.remote_addr or "unknown"
        client = "api-" + hashlib.sha256(address.encode()).hexdigest()[:12]
        return Requester(source="web", user_id=client, name=client[:10])

    def address_key(self) -> str:
        """Return the client address (sign-in attempts count per address)."""
        return f"addr:{request.remote_addr or 'unknown'}"

    def rate_key(self) -> str:
        """Return the key rate limits count by: the API token, else the client address."""
        token = self.bearer()
        if token and self.token_matches(token):
            return "token:admin"
        if token and self.token_requester() is not None:
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return f"addr:{request.remote_addr or 'unknown'}"

    def may_browse(self) -> bool:
        """Return whether this client may see the gallery."""
        mode = self.settings.web.browse
        if mode == "public" or self.is_admin():
            return True
        return mode == "members" and (self.is_member() or self.is_moderator())

    def require_browse(self) -> None:
        """Abort with 403 unless browsing is allowed."""
        if not self.may_browse():
            abort(403)

    def may_generate(self) -> bool:
        """Return whether this client may queue jobs."""
        mode = self.settings.web.generate
        if mode == "open":
            return True
        if mode == "members":
            return self.is_member() or self.is_admin()
        return mode == "token" and self.is_admin()

    def require_generate(self) -> None:
        """Abort with 403 unless generating is allowed."""
        if not self.may_generate():
            abort(403)

    def is_mine(self, source: str, author_id: str) -> bool:
        """Return whether a record was made by this client (or this signed-in person)."""
        person = self.person()
        if person is not None and source == "discord":
            return author_id == person.user_id
        by_token = self.token_requester()
        if by_token is not None:
            return source == by_token.source and author_id == by_token.user_id
        if source != "web":
            return False
        if self.is_admin() and author_id == ADMIN_ID:
            return True
        value = session.get("cid")
        return isinstance(value, str) and value == author_id


def new_nonce() -> str:
    """Return a fresh per-form nonce; the engine sees it as an idempotency key."""
    return secrets.token_hex(16)


def idempotency_key(form: Mapping[str, str], requester: Requester) -> str | None:
    """Return the key that makes a double-submitted form queue one job."""
    nonce = form.get("nonce", "")
    if not _NONCE.fullmatch(nonce):
        return None
    return f"{requester.key}:{nonce}"


def install(app: Flask) -> None:
    """Attach the security headers to every response."""
    app.after_request(add_headers)
