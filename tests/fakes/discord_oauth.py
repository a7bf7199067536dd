"""The OAuth2 half of the fake Discord: authorize, token (code + PKCE, refresh) and the two
user routes an OAuth2 bearer token may read (`/users/@me`, `/users/@me/guilds/{guild}/member`).

`signed_in` is who is logged in to Discord in "the browser": /oauth2/authorize approves for them
at once (as Discord does for an app the user authorised before).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

from aiohttp import web

from .discord_world import Call, FakeUser, World

API_PREFIXES = ("/api/v10", "/api/v9", "/api")
_MEMBER = re.compile(r"^/users/@me/guilds/(?P<guild>\d+)/member$")


@dataclass
class Grant:
    """An authorization code, waiting to be traded once."""

    client_id: str
    redirect_uri: str
    challenge: str
    user_id: int
    scope: str
    is_used: bool = False


@dataclass
class OAuthApp:
    """A registered OAuth2 application."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class OAuth:
    """Fake Discord's OAuth2 provider."""

    world: World
    apps: dict[str, OAuthApp] = field(default_factory=dict)
    signed_in: FakeUser | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[int, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def register(self, client_id: str, client_secret: str, redirect_uri: str) -> OAuthApp:
        """Register an application that may send people to /oauth2/authorize."""
        app = OAuthApp(client_id, client_secret, [redirect_uri])
        self.apps[client_id] = app
        return app

    def revoke_all(self) -> None:
        """Forget every token (a user deauthorising the app)."""
        self.access_tokens.clear()
        self.refresh_tokens.clear()

    async def handle(self, request: web.Request, call: Call) -> web.StreamResponse | None:
        """Answer an OAuth2 route, or None to let the REST routes answer."""
        path = call.path
        if call.method == "GET" and path == "/oauth2/authorize":
            call.route = "GET /oauth2/authorize"
            return self.authorize(call.query)
        if call.method == "POST" and path in [f"{p}/oauth2/token" for p in API_PREFIXES]:
            call.route = "POST /oauth2/token"
            return self.token(_form(call.json))
        bearer = call.headers.get("Authorization", "")
        if not bearer.startswith("Bearer "):
            return None
        route = next((path.removeprefix(p) for p in API_PREFIXES if path.startswith(p + "/")), "")
        call.route = f"{call.method} (bearer) {route}"
        held = self.access_tokens.get(bearer.removeprefix("Bearer "))
        if held is None:
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        user_id, scope = held
        if call.method == "GET" and route == "/users/@me":
            user = self.world.user(user_id)
            return _json(user.payload()) if user else _json({"message": "Unknown User"}, 404)
        match = _MEMBER.match(route)
        if call.method == "GET" and match:
            if "guilds.members.read" not in scope.split():
                return _json({"message": "Missing Access", "code": 50001}, 403)
            guild = self.world.guild(int(match["guild"]))
            member = guild.member(user_id) if guild else None
            if member is None:
                return _json({"message": "Unknown Guild", "code": 10004}, 404)
            return _json(member.payload())
        return _json({"message": "401: Unauthorized", "code": 0}, 401)

    def authorize(self, query: dict[str, str]) -> web.Response:
        """Check the request as Discord does, then redirect back with a code and the state."""
        app = self.apps.get(query.get("client_id", ""))
        if app is None:
            return web.Response(status=400, text="Invalid client_id")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            return web.Response(status=400, text="Invalid OAuth2 redirect_uri")
        if query.get("response_type") != "code":
            return web.Response(status=400, text="unsupported response_type")
        challenge = query.get("code_challenge", "")
        if not challenge or query.get("code_challenge_method") != "S256":
            return web.Response(status=400, text="PKCE with S256 required by this fake")
        if self.signed_in is None:
            return web.Response(status=401, text="nobody is logged in to the fake Discord")
        code = secrets.token_urlsafe(16)
        scope = query.get("scope", "")
        self.grants[code] = Grant(app.client_id, redirect_uri, challenge, self.signed_in.id, scope)
        answer = {"code": code}
        if "state" in query:
            answer["state"] = query["state"]
        return web.Response(status=302, headers={"Location": f"{redirect_uri}?{urlencode(answer)}"})

    def token(self, form: dict[str, str]) -> web.Response:
        """Trade a code (verifier checked, once only) or a refresh token for tokens."""
        self.token_requests.append(form)
        app = self.apps.get(form.get("client_id", ""))
        if app is None or not secrets.compare_digest(
            form.get("client_secret", ""), app.client_secret
        ):
            return _json({"error": "invalid_client"}, 401)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant = self.grants.get(form.get("code", ""))
            if grant is None or grant.is_used or grant.client_id != app.client_id:
                return _json({"error": "invalid_grant"}, 400)
            grant.is_used = True
            if form.get("redirect_uri") != grant.redirect_uri:
                return _json({"error": "invalid_grant", "error_description": "redirect_uri"}, 400)
            if _challenge(form.get("code_verifier", "")) != grant.challenge:
                return _json({"error": "invalid_grant", "error_description": "code_verifier"}, 400)
            return self._issue(grant.user_id, grant.scope, app.client_id)
        if grant_type == "refresh_token":
            held = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if held is None or held[2] != app.client_id:
                return _json({"error": "invalid_grant"}, 400)
            return self._issue(held[0], held[1], app.client_id)
        return _json({"error": "unsupported_grant_type"}, 400)

    def _issue(self, user_id: int, scope: str, client_id: str) -> web.Response:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access_tokens[access] = (user_id, scope)
        self.refresh_tokens[refresh] = (user_id, scope, client_id)
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 604800,
            "refresh_token": refresh,
            "scope": scope,
        }
        return _json(body)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _form(payload: object) -> dict[str, str]:
    if not isinstance(payload, str):
        return {}
    return {k: v[0] for k, v in parse_qs(payload, keep_blank_values=True).items()}


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)
