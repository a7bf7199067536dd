"""Sign in with Discord over real HTTP against the fake (FAULTS 43, 44): state, PKCE, one-use
codes, local redirects only, CSRF on sign-out and session-authorised JSON, members-only
browsing, roles read again within the refresh interval, a ban applying at once, ProxyFix."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from engine import ConfigError, Requester
from tests.web.conftest import form_tokens, make_image, seed_images
from tests.web.discord_signin import (
    CLIENT_ID,
    PUBLIC_URL,
    SECRET_ENV,
    authorize,
    local,
    sign_in,
)
from web.people import PERSON_KEY
from web.signin import REFRESH_KEY, local_path

pytestmark = pytest.mark.timeout(60)


def person_of(client) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    with client.session_transaction() as session:
        value: dict[str, Any] | None = session.get(PERSON_KEY)
        return value


def test_member_signs_in_and_lands_on_the_local_next_path(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    response = sign_in(discord.fake, client, "alice", next_path="/generate?prompt=fox")
    assert response.status_code == 303
    assert response.headers["Location"] == "/generate?prompt=fox"
    person = person_of(client)
    assert person is not None and person["id"] == str(discord.fake.user("alice").id)
    assert person["member"] is True
    assert "Sign out" in client.get("/").get_data(as_text=True)


def test_authorize_request_carries_state_s256_challenge_and_scopes(make_signin_site) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    location = client.get("/auth/login").headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == PUBLIC_URL + "/auth/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43 and len(query["state"]) >= 20
    assert query["scope"] == "identify guilds.members.read"


def test_a_wrong_state_is_refused_and_nobody_is_signed_in(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    discord.fake.rest.oauth.signed_in = discord.fake.user("alice")
    callback = authorize(client)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get("/auth/callback", query_string={"code": code, "state": "forged-state"})
    assert response.status_code == 400
    assert person_of(client) is None


def test_a_replayed_callback_is_refused(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    first = site.client()
    discord.fake.rest.oauth.signed_in = discord.fake.user("alice")
    callback = authorize(first)
    assert first.get(local(callback)).status_code == 303
    assert first.get(local(callback)).status_code == 400  # its state was spent
    other = site.client()
    assert other.get(local(callback)).status_code == 400  # and no other browser holds it
    assert person_of(other) is None


def test_a_code_used_twice_is_refused(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    discord.fake.rest.oauth.signed_in = discord.fake.user("alice")
    callback = authorize(client)
    assert client.get(local(callback)).status_code == 303
    client.post("/auth/logout", data=form_tokens(client, "/"))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    second = client.get("/auth/login").headers["Location"]
    state = parse_qs(urlsplit(second).query)["state"][0]
    response = client.get("/auth/callback", query_string={"code": code, "state": state})
    assert response.status_code == 400
    assert person_of(client) is None


def test_a_wrong_pkce_verifier_is_refused(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    discord.fake.rest.oauth.signed_in = discord.fake.user("alice")
    callback = authorize(client)
    with client.session_transaction() as session:
        for key, value in session.items():
            if key.startswith("_state_discord_"):
                value["data"]["code_verifier"] = "x" * 48
                session[key] = value
    assert client.get(local(callback)).status_code == 400
    assert person_of(client) is None
    form = discord.fake.rest.oauth.token_requests[-1]
    assert form["grant_type"] == "authorization_code" and form["code_verifier"] == "x" * 48


def test_a_missing_pkce_challenge_is_refused_by_discord(discord) -> None:  # type: ignore[no-untyped-def]
    discord.web_section()
    url = f"{discord.fake.origin}/oauth2/authorize"
    query = {
        "client_id": CLIENT_ID,
        "redirect_uri": PUBLIC_URL + "/auth/callback",
        "response_type": "code",
        "state": "s",
    }
    assert requests.get(url, params=query, allow_redirects=False, timeout=10).status_code == 400


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.test/",
        "//evil.test/x",
        "/\\evil.test",
        "javascript:alert(1)",
        "http:/evil.test",
        "/\tevil",
    ],
)
def test_a_redirect_to_another_site_after_sign_in_is_refused(
    make_signin_site, discord, target
) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    response = sign_in(discord.fake, client, "alice", next_path=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert local_path(target) == "/"


def test_sign_out_needs_the_csrf_token(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    sign_in(discord.fake, client, "alice")
    assert client.post("/auth/logout").status_code == 400
    assert person_of(client) is not None
    assert client.post("/auth/logout", data=form_tokens(client, "/")).status_code == 303
    assert person_of(client) is None


def test_the_session_keeps_no_access_token_and_a_sealed_refresh_token(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    sign_in(discord.fake, client, "alice")
    oauth = discord.fake.rest.oauth
    with client.session_transaction() as session:
        kept = repr(dict(session))
        sealed = session[REFRESH_KEY]
    assert not any(token in kept for token in oauth.access_tokens)
    assert not any(token in kept for token in oauth.refresh_tokens)
    assert sealed.startswith("gAAAA")  # Fernet


def test_the_session_cookie_is_http_only_lax_and_secure_on_https(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site(web={"public_url": "https://gallery.test"}).client()
    response = sign_in(discord.fake, client, "alice")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_members_only_gallery_shows_outsiders_a_sign_in_page_and_401s(make_signin_site) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"browse": "members"})
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    page = client.get("/")
    assert page.status_code == 401 and "Sign in with Discord" in page.get_data(as_text=True)
    for url in (
        f"/images/{image.id}",
        f"/files/{image.id}.png",
        f"/images/{image.id}/download",
        "/api/v1/images",
        f"/api/v1/images/{image.id}",
        "/api/v1/jobs/abc",
        "/generate",
        "/metrics",
    ):
        response = client.get(url)
        assert response.status_code == 401, url
        assert image.prompt not in response.get_data(as_text=True)
    assert client.get("/healthz").status_code in (200, 503)


def test_members_only_gallery_opens_to_a_member(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"browse": "members"})
    (image,) = seed_images(site.store, make_image())
    client = site.client()
    sign_in(discord.fake, client, "alice")
    assert image.prompt in client.get("/").get_data(as_text=True)
    with client.get(f"/files/{image.id}.png") as file:
        assert file.status_code == 200
    assert client.get("/api/v1/images").get_json()["images"][0]["id"] == image.id


def test_a_signed_in_non_member_is_kept_out_of_a_members_only_gallery(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"browse": "members"})
    (image,) = seed_images(site.store, make_image())
    stranger = discord.fake.world.users["stranger"] = type(discord.fake.user("alice"))(
        100_000_000_000_000_099, "stranger"
    )
    client = site.client()
    discord.fake.rest.oauth.signed_in = stranger
    assert client.get(local(authorize(client))).status_code == 303
    assert person_of(client)["member"] is False  # type: ignore[index]
    assert client.get("/").status_code == 401
    assert client.get(f"/files/{image.id}.png").status_code == 401


def test_generate_members_refuses_outsiders_and_takes_members(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"generate": "members"})
    anonymous = site.client()
    form = {
        "prompt": "a fox",
        "steps": "2",
        "csrf_token": form_tokens(anonymous, "/login")["csrf_token"],
    }
    assert anonymous.post("/generate", data=form).status_code == 403
    member = site.client()
    sign_in(discord.fake, member, "alice")
    response = member.post(
        "/generate", data={"prompt": "a fox", "steps": "2", **form_tokens(member)}
    )
    assert response.status_code == 303


def test_json_changes_under_a_session_need_the_csrf_header(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    client = make_signin_site().client()
    sign_in(discord.fake, client, "alice")
    body = {"prompt": "a fox", "steps": 2}
    assert client.post("/api/v1/generations", json=body).status_code == 400
    token = form_tokens(client, "/")["csrf_token"]
    response = client.post("/api/v1/generations", json=body, headers={"X-CSRFToken": token})
    assert response.status_code == 202


def test_a_banned_discord_user_cannot_generate_from_their_session(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site()
    client = site.client()
    sign_in(discord.fake, client, "alice")
    moderator = Requester(source="web", user_id="admin", name="admin", is_moderator=True)
    alice_key = f"discord:{discord.fake.user('alice').id}"
    running = site.running
    ban = running.engine.ban(alice_key, None, "spam", moderator)
    asyncio.run_coroutine_threadsafe(ban, running.loop).result(10)
    response = client.post(
        "/generate", data={"prompt": "a fox", "steps": "2", **form_tokens(client)}
    )
    assert response.status_code == 403
    assert "banned" in response.get_data(as_text=True)


def test_a_role_change_on_discord_applies_within_the_refresh_interval(
    make_signin_site, discord
) -> None:  # type: ignore[no-untyped-def]
    fake = discord.fake
    site = make_signin_site(
        web={"roles_refresh_s": 60}, moderation={"moderator_roles": [str(fake.moderator_role.id)]}
    )
    (image,) = seed_images(site.store, make_image(source="discord", author_id="1"))
    signin = site.app.extensions["imagine_signin"]
    now = [1_000_000.0]
    signin.clock = lambda: now[0]
    client = site.client()
    sign_in(fake, client, "alice")
    delete = f"/images/{image.id}/delete"
    assert client.post(delete, data=form_tokens(client, "/")).status_code == 403
    fake.guild.member(fake.user("alice").id).role_ids.append(fake.moderator_role.id)
    now[0] += 30
    assert client.post(delete, data=form_tokens(client, "/")).status_code == 403  # not yet
    now[0] += 31
    assert client.post(delete, data=form_tokens(client, "/")).status_code == 303
    assert site.store.image(image.id) is None


def test_leaving_the_guild_ends_membership_at_the_next_refresh(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    fake = discord.fake
    site = make_signin_site(web={"browse": "members", "roles_refresh_s": 60})
    signin = site.app.extensions["imagine_signin"]
    now = [1_000_000.0]
    signin.clock = lambda: now[0]
    client = site.client()
    sign_in(fake, client, "bob")
    assert client.get("/").status_code == 200
    fake.guild.members.remove(fake.guild.member(fake.user("bob").id))
    now[0] += 61
    assert client.get("/").status_code == 401


def test_a_revoked_discord_grant_signs_out_at_the_next_refresh(make_signin_site, discord) -> None:  # type: ignore[no-untyped-def]
    site = make_signin_site(web={"roles_refresh_s": 60})
    signin = site.app.extensions["imagine_signin"]
    now = [1_000_000.0]
    signin.clock = lambda: now[0]
    client = site.client()
    sign_in(discord.fake, client, "alice")
    discord.fake.rest.oauth.revoke_all()
    now[0] += 61
    client.get("/")
    assert person_of(client) is None


def test_sign_in_routes_are_404_when_sign_in_is_not_configured(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/auth/login").status_code == 404
    assert client.get("/auth/callback?code=a&state=b").status_code == 404


def test_proxy_headers_count_only_with_trusted_proxies(make_site, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, "web.account")
    headers = {"X-Forwarded-For": "203.0.113.9"}
    for hops, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        site = make_site(web={"trusted_proxies": hops}, env={"IMAGINE_ADMIN_TOKEN": "t" * 32})
        client = site.client()
        data = {"token": "wrong", **form_tokens(client, "/login")}
        client.post("/login", data=data, headers=headers)
        assert f"failed admin sign-in from {expected}" in caplog.text


@pytest.mark.parametrize(
    ("web", "env", "key"),
    [
        ({"browse": "members"}, {}, "web.browse"),
        ({"generate": "members"}, {}, "web.generate"),
        ({"discord_client_id": CLIENT_ID, "guild_id": "1"}, SECRET_ENV, "web.public_url"),
        ({"discord_client_id": CLIENT_ID, "public_url": PUBLIC_URL}, SECRET_ENV, "web.guild_id"),
        (
            {"discord_client_id": CLIENT_ID, "public_url": PUBLIC_URL, "guild_id": "1"},
            {},
            "IMAGINE_DISCORD_CLIENT_SECRET",
        ),
    ],
)
def test_incomplete_sign_in_config_names_the_key(make_settings, web, env, key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        make_settings(env=env, web=web)
    assert caught.value.key == key
