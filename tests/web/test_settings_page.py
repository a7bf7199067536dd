"""Your settings on the web: a signed-in person edits the same defaults as Discord's
`/settings`, and the generate form uses them (the engine applies them to both)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from engine import Delivery, Preferences, Requester, aspect_size
from engine.request import fit_size
from tests.web.conftest import Site, form_tokens, wait_job
from tests.web.discord_signin import Discord, sign_in

pytestmark = pytest.mark.timeout(90)

STYLES = {"oil": {"prompt": "{prompt}, oil painting", "label": "Oil"}}


@pytest.fixture
def site(make_signin_site: Callable[..., Site]) -> Site:
    return make_signin_site(styles=STYLES)


def alice(discord: Discord) -> Requester:
    return Requester(source="discord", user_id=str(discord.fake.user("alice").id))


def save(client: Any, **fields: str) -> Any:
    data = {"aspect": "", "steps": "", "guidance": "", "negative_prompt": "", "delivery": ""}
    return client.post("/settings", data={**data, **fields, **form_tokens(client)})


def test_settings_need_a_signed_in_person(site: Site) -> None:
    answer = site.client().get("/settings")
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/auth/login?next=/settings")


def test_settings_are_404_without_sign_in_configured(make_site: Callable[..., Site]) -> None:
    assert make_site().client().get("/settings").status_code == 404


def test_a_default_saved_on_the_web_is_discords_too_and_the_form_uses_it(
    site: Site, discord: Discord
) -> None:
    client = site.client()
    sign_in(discord.fake, client, "alice")

    saved = save(client, aspect="16:9", style="oil", delivery="dm", remix="on")

    assert saved.status_code == 303 and saved.headers["Location"] == "/settings"
    mine = site.running.bridge.preferences(alice(discord))
    assert (mine.aspect, mine.style, mine.delivery, mine.remix) == (
        "16:9",
        "oil",
        Delivery.DM,
        True,
    )
    page = client.get("/settings").get_data(as_text=True)
    assert re.search(r'<option value="16:9"\s+selected>', page)
    assert "Saved. They apply to /imagine and to the generate form." in page
    form = client.get("/generate").get_data(as_text=True)
    assert 'id="my-defaults"' in form and "aspect 16:9" in form
    posted = client.post("/generate", data={"prompt": "a fox", "steps": "2", **form_tokens(client)})
    job_id = posted.headers["Location"].rsplit("/", 1)[1]
    job = wait_job(client, job_id)
    image = client.get(f"/api/v1/images/{job['image_ids'][0]}").get_json()
    native = site.running.bridge.status().native_px
    limits = site.running.settings.limits
    assert (image["width"], image["height"]) == fit_size(*aspect_size("16:9", native), limits)
    assert image["style"] == "oil" and image["prompt"] == "a fox, oil painting"
    assert "Your defaults: aspect 16:9; style oil" in client.get(f"/jobs/{job_id}").get_data(
        as_text=True
    )


def test_a_value_out_of_range_is_shown_beside_its_field_and_nothing_changes(
    site: Site, discord: Discord
) -> None:
    client = site.client()
    sign_in(discord.fake, client, "alice")

    refused = save(client, steps="5000")

    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert 'id="steps-error"' in html and "steps: expected 1–" in html
    assert site.running.bridge.preferences(alice(discord)) == Preferences()


def test_reset_restores_the_servers_defaults(site: Site, discord: Discord) -> None:
    client = site.client()
    sign_in(discord.fake, client, "alice")
    save(client, aspect="9:16", negative_prompt="blurry")

    reset = client.post("/settings", data={"action": "reset", **form_tokens(client)})

    assert reset.status_code == 303
    assert site.running.bridge.preferences(alice(discord)) == Preferences()


def test_saving_without_the_csrf_token_is_refused(site: Site, discord: Discord) -> None:
    client = site.client()
    sign_in(discord.fake, client, "alice")

    refused = client.post("/settings", data={"aspect": "16:9"})

    assert refused.status_code == 400
    assert site.running.bridge.preferences(alice(discord)) == Preferences()
