"""Sign in with Discord: OAuth2 authorization code with PKCE (S256) and `state`, via Authlib.

Scopes `identify guilds.members.read`: the access token reads the user and their member record
in `web.guild_id` (roles, nick), then it is dropped. The refresh token stays in the session,
encrypted (see web/people.py), so the roles are read again at most every `web.roles_refresh_s`;
when that refresh fails the person is signed out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, abort, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from engine import Settings
from web.people import MODERATING_PERMISSIONS, PERSON_KEY, Person, TokenBox, current_person

log = logging.getLogger(__name__)

bp = Blueprint("signin", __name__)

SCOPES = "identify guilds.members.read"
REFRESH_KEY = "person_rt"
NEXT_KEY = "signin_next"
TIMEOUT_S = 10.0
DISCORD_API = "https://discord.com/api/v10"


class SignInFailed(Exception):
    """Discord did not answer as expected while reading who signed in."""


class SignIn:
    """The OAuth2 client of one app, and how a person is read from Discord."""

    def __init__(self, app: Flask, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        web = settings.web
        base = web.oauth_base.rstrip("/")
        self.api = f"{base}/api/v10/"
        self.oauth = OAuth(app)
        self.client = self.oauth.register(
            "discord",
            client_id=web.discord_client_id,
            client_secret=settings.secrets.discord_client_secret,
            authorize_url=f"{base}/oauth2/authorize",
            access_token_url=f"{base}/api/oauth2/token",
            api_base_url=self.api,
            client_kwargs={
                "scope": SCOPES,
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": "client_secret_post",
                "default_timeout": TIMEOUT_S,
            },
        )
        self.box = TokenBox(str(app.config["SECRET_KEY"]))

    @property
    def redirect_uri(self) -> str:
        """Return the redirect URI registered with the Discord application."""
        return self.settings.web.public_url.rstrip("/") + "/auth/callback"

    def person_of(self, token: dict[str, Any]) -> Person:
        """Read the user and their member record with an access token; raise SignInFailed."""
        user = self._get("users/@me", token)
        guild_id = self.settings.web.guild_id
        member = self._get(f"users/@me/guilds/{guild_id}/member", token, missing_ok=True)
        roles = tuple(str(r) for r in member.get("roles", ())) if member else ()
        name = (member or {}).get("nick") or user.get("global_name") or user.get("username")
        return Person(
            user_id=str(user["id"]),
            name=str(name or user["id"])[:100],
            is_member=member is not None,
            role_ids=roles,
            may_manage_messages=member is not None and self._may_manage_messages(roles),
            checked_at=self.clock(),
        )

    def _get(self, path: str, token: dict[str, Any], missing_ok: bool = False) -> Any:
        try:
            response = self.client.get(path, token=token, timeout=TIMEOUT_S)
        except (requests.RequestException, OAuthError) as error:
            raise SignInFailed(f"GET {path}: {error}") from error
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code != 200:
            raise SignInFailed(f"GET {path}: HTTP {response.status_code}")
        return response.json()

    def _may_manage_messages(self, role_ids: tuple[str, ...]) -> bool:
        """Return whether these roles grant Manage Messages (read with the bot's token, if any).

        The member record lists role ids only; their permissions need the guild's roles, which
        only a bot in the guild may read.
        """
        bot_token = self.settings.secrets.discord_token
        if not bot_token:
            return False
        guild_id = self.settings.web.guild_id
        api = (self.settings.bot.api_base or DISCORD_API).rstrip("/")
        try:
            response = requests.get(
                f"{api}/guilds/{guild_id}/roles",
                headers={"Authorization": f"Bot {bot_token}"},
                timeout=TIMEOUT_S,
            )
        except requests.RequestException as error:
            log.warning("cannot read the roles of guild %s: %s", guild_id, error)
            return False
        if response.status_code != 200:
            log.warning(
                "cannot read the roles of guild %s: HTTP %s", guild_id, response.status_code
            )
            return False
        held = {guild_id, *role_ids}  # @everyone has the guild's id
        bits = 0
        for role in response.json():
            if str(role.get("id")) in held:
                bits |= int(role.get("permissions", 0))
        return bool(bits & MODERATING_PERMISSIONS)

    def remember(self, person: Person, token: dict[str, Any]) -> None:
        """Keep the person (and the sealed refresh token, never the access token)."""
        session[PERSON_KEY] = person.to_session()
        refresh = token.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            session[REFRESH_KEY] = self.box.seal(refresh)
        else:
            session.pop(REFRESH_KEY, None)
        session.permanent = True

    def forget(self) -> None:
        """Sign the person out (the browser's client id stays)."""
        session.pop(PERSON_KEY, None)
        session.pop(REFRESH_KEY, None)

    def refresh_if_stale(self) -> None:
        """Read the roles again when they are older than the interval; sign out if that fails."""
        person = current_person(session)
        if person is None:
            return
        age_s = self.clock() - person.checked_at
        if 0 <= age_s < self.settings.web.roles_refresh_s:
            return
        refresh = self.box.open(session.get(REFRESH_KEY))
        if refresh is None:
            self.forget()
            return
        try:
            token = self.client.fetch_access_token(
                grant_type="refresh_token", refresh_token=refresh
            )
            fresh = self.person_of(token)
        except (OAuthError, requests.RequestException, SignInFailed, KeyError) as error:
            log.info("signing %s out: their roles could not be read again (%s)", person.name, error)
            self.forget()
            return
        if fresh.user_id != person.user_id:
            self.forget()
            return
        self.remember(fresh, token)


def signin() -> SignIn | None:
    """Return this app's sign-in, or None when `web.discord_client_id` is unset."""
    from flask import current_app

    value: SignIn | None = current_app.extensions.get("imagine_signin")
    return value


def _required() -> SignIn:
    found = signin()
    if found is None:
        abort(404)
    return found


def local_path(target: str | None) -> str:
    """Return `target` if it is a path on this site, else "/" (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(char) < 0x20 or char == "\\" for char in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target[:2000]


@bp.get("/auth/login")
def login() -> ResponseReturnValue:
    """Send the browser to Discord to authorise (with state and a PKCE challenge)."""
    found = _required()
    session[NEXT_KEY] = local_path(request.args.get("next"))
    response: ResponseReturnValue = found.client.authorize_redirect(found.redirect_uri)
    return response


@bp.get("/auth/callback")
def callback() -> ResponseReturnValue:
    """Trade the code for a token (state and verifier checked), read the person, drop it."""
    found = _required()
    try:
        token = found.client.authorize_access_token()
        person = found.person_of(token)
    except (OAuthError, SignInFailed, requests.RequestException) as error:
        log.warning("failed Discord sign-in from %s: %s", request.remote_addr or "unknown", error)
        found.forget()
        return render_template("signin.html", error="Signing in with Discord did not work."), 400
    found.remember(person, token)
    log.info("%s (%s) signed in", person.name, person.user_id)
    return redirect(local_path(session.pop(NEXT_KEY, "/")), 303)


@bp.get("/auth")
def page() -> ResponseReturnValue:
    """Show the sign-in page."""
    _required()
    return render_template("signin.html", error=None)


@bp.post("/auth/logout")
def logout() -> ResponseReturnValue:
    """Sign out of the gallery (CSRF-checked like every form)."""
    _required().forget()
    return redirect("/", 303)


def install(app: Flask, settings: Settings, clock: Callable[[], float] = time.time) -> None:
    """Give the app sign-in when it is configured, and refresh roles before each request."""
    if not settings.web.discord_client_id:
        return
    found = SignIn(app, settings, clock)
    app.extensions["imagine_signin"] = found

    def refresh() -> None:
        if request.endpoint != "static":
            found.refresh_if_stale()

    app.before_request(refresh)
