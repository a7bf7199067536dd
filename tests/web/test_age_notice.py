"""The age notice: with sign in with Discord configured, age-restricted and flagged images are
only for members who confirmed it (blurred, as before); anonymous visitors, non-members and
members who did not confirm see neither the image nor its file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.web.conftest import Site, form_tokens, make_image, seed_images
from tests.web.discord_signin import (
    Discord,
    authorize,
    local,
    sign_in,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def site(make_signin_site: Callable[..., Site]) -> Site:
    return make_signin_site()


def seed(site: Site) -> tuple[Any, Any, Any]:
    return tuple(  # type: ignore[return-value]
        seed_images(
            site.store,
            make_image(prompt="a plain fox"),
            make_image(prompt="a fox from the adults channel", is_nsfw_channel=True),
            make_image(prompt="a flagged fox", is_flagged=True),
        )
    )


def sees(client: Any, image: Any) -> bool:
    listed = image.id in client.get("/").get_data(as_text=True)
    with client.get(f"/files/{image.id}.png") as answer:
        file_status = answer.status_code
    page_status = client.get(f"/images/{image.id}").status_code
    assert (file_status == 200) == (page_status == 200) == listed, (file_status, page_status)
    return listed


def confirm(client: Any) -> Any:
    tokens = form_tokens(client, "/age?next=/")
    return client.post("/age", data={"next": "/", **tokens})


def test_anonymous_visitors_see_only_the_plain_images(site: Site) -> None:
    plain, adult, flagged = seed(site)
    client = site.client()
    assert sees(client, plain)
    assert not sees(client, adult) and not sees(client, flagged)
    assert client.get("/age").status_code == 303  # to sign in first


def test_a_member_sees_them_blurred_once_they_confirm(site: Site, discord: Discord) -> None:
    plain, adult, flagged = seed(site)
    client = site.client()
    sign_in(discord.fake, client, "alice")
    assert not sees(client, adult)
    assert 'id="age-chip"' in client.get("/").get_data(as_text=True)

    confirmed = confirm(client)

    assert confirmed.status_code == 303 and confirmed.headers["Location"] == "/"
    assert sees(client, adult) and sees(client, flagged) and sees(client, plain)
    html = client.get("/").get_data(as_text=True)
    assert "sensitive" in html and 'id="age-chip"' not in html


def test_the_confirmation_is_the_persons_not_the_browsers(site: Site, discord: Discord) -> None:
    _, adult, _ = seed(site)
    client = site.client()
    sign_in(discord.fake, client, "alice")
    confirm(client)
    client.post("/auth/logout", data=form_tokens(client, "/"))
    sign_in(discord.fake, client, "bob")
    assert not sees(client, adult)


def test_confirming_needs_the_csrf_token_and_membership(site: Site, discord: Discord) -> None:
    _, adult, _ = seed(site)
    client = site.client()
    sign_in(discord.fake, client, "alice")
    assert client.post("/age", data={"next": "/"}).status_code == 400
    assert not sees(client, adult)
    stranger = discord.fake.world.users["stranger"] = type(discord.fake.user("alice"))(
        100_000_000_000_000_098, "stranger"
    )
    other = site.client()
    discord.fake.rest.oauth.signed_in = stranger
    other.get(local(authorize(other)))
    assert other.get("/age").status_code == 403
    assert not sees(other, adult)


def test_the_next_path_after_confirming_stays_on_this_site(site: Site, discord: Discord) -> None:
    client = site.client()
    sign_in(discord.fake, client, "alice")
    tokens = form_tokens(client, "/age?next=/")
    answer = client.post("/age", data={"next": "https://evil.example/", **tokens})
    assert answer.headers["Location"] == "/"


def test_without_sign_in_configured_the_gallery_blurs_them_as_before(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    _, adult, _ = seed(site)
    client = site.client()
    assert sees(client, adult)
    assert client.get("/age").status_code == 404
