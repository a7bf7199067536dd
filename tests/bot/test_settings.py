"""`/settings` on Discord: one private panel (selects, a modal, buttons) whose defaults the
engine applies to a plain `/imagine`; results in the channel, privately, or by DM; remix mode."""

from __future__ import annotations

from typing import Any

import pytest

from engine import Delivery, Preferences, Requester, aspect_size, read_parameters
from engine.request import fit_size
from tests.bot.conftest import Harness, wait_for
from tests.fakes.discord import FakeInteraction, FakeMessage

pytestmark = pytest.mark.timeout(120)

STYLES = {"oil": {"prompt": "{prompt}, oil painting", "label": "Oil"}}


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


def components(message: FakeMessage) -> dict[str, dict[str, Any]]:
    return {c["custom_id"]: c for row in message.components for c in row["components"]}


def public_messages(harness: Harness) -> list[FakeMessage]:
    """Return what everyone in the text channel can see."""
    channel = harness.fake.text_channel.id
    return [m for m in harness.fake.messages(channel) if not m.is_ephemeral]


def alice(harness: Harness) -> Requester:
    user = harness.fake.user("alice")
    return Requester(source="discord", user_id=str(user.id), name=user.name)


async def open_panel(harness: Harness, user: str = "alice") -> FakeMessage:
    fake = harness.fake
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user(user), "settings", {}
    )
    return await harness.answer(handle)


async def choose(
    harness: Harness, panel: FakeMessage, field: str, value: str, user: str = "alice"
) -> FakeInteraction:
    fake = harness.fake
    handle = await fake.press_button(
        panel.id, f"imagine:set:{field}", fake.user(user), component_type=3, values=[value]
    )
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"))
    return handle


async def press(harness: Harness, message: FakeMessage, custom_id: str) -> FakeInteraction:
    fake = harness.fake
    handle = await fake.press_button(message.id, custom_id, fake.user("alice"))
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"))
    return handle


async def result(harness: Harness, handle: FakeInteraction) -> tuple[str, FakeMessage]:
    job_id = await harness.job_id(handle, timeout_s=15)
    return job_id, await harness.delivered(job_id, timeout_s=120)


async def test_the_panel_is_private_and_keeps_to_discords_component_limits(
    harness: Harness,
) -> None:
    await harness.start(styles=STYLES)

    panel = await open_panel(harness)

    assert panel.is_ephemeral
    assert fields(panel.embeds[0])["Aspect"].startswith("server: ")
    found = components(panel)
    assert {"imagine:set:aspect", "imagine:set:model", "imagine:set:style"} <= set(found)
    assert {"imagine:set:delivery", "imagine:set:more", "imagine:set:remix"} <= set(found)
    assert len(panel.components) <= 5
    assert all(len(c["options"]) <= 25 for c in found.values() if c["type"] == 3)
    assert [o["value"] for o in found["imagine:set:style"]["options"]] == ["-", "oil"]


async def test_aspect_16_9_in_settings_makes_a_plain_imagine_16_9_and_the_embed_says_so(
    harness: Harness,
) -> None:
    await harness.start()
    panel = await open_panel(harness)

    chose = await choose(harness, panel, "aspect", "16:9")

    assert chose.callback_type == 7  # the panel itself is updated
    assert fields(panel.embeds[0])["Aspect"] == "**16:9**"
    assert harness.engine.preferences(alice(harness)).aspect == "16:9"
    _, message = await result(harness, await harness.imagine("a fox"))
    params = read_parameters(message.attachments[0].data)
    assert params is not None and params.width > params.height
    native = harness.engine.registry.facts(params.model).native_px
    wide = fit_size(*aspect_size("16:9", native), harness.engine.settings.limits)
    assert (params.width, params.height) == wide
    assert fields(message.embeds[0])["Your defaults"] == "aspect 16:9"
    _, typed = await result(harness, await harness.imagine("a fox", aspect="1:1"))
    square = read_parameters(typed.attachments[0].data)
    assert square is not None and square.width == square.height
    assert "Your defaults" not in fields(typed.embeds[0])


async def test_the_numbers_modal_saves_checks_and_clamps(harness: Harness) -> None:
    await harness.start(limits={"max_steps": 20, "roles": {"5": {"max_steps": 40}}})
    panel = await open_panel(harness)
    fake = harness.fake

    opened = await press(harness, panel, "imagine:set:more")
    assert opened.callback_type == 9
    refused = await fake.submit_modal(opened, {"steps": "41"})
    reply = await harness.answer(refused)
    assert reply.is_ephemeral and "steps" in reply.content and "1–40" in reply.content
    assert harness.engine.preferences(alice(harness)) == Preferences()

    opened = await press(harness, panel, "imagine:set:more")
    saved = await fake.submit_modal(
        opened, {"steps": "30", "guidance": "6,5", "negative": "blurry"}
    )
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{saved.id}/"))
    assert saved.callback_type == 7
    mine = harness.engine.preferences(alice(harness))
    assert (mine.steps, mine.guidance, mine.negative_prompt) == (30, 6.5, "blurry")

    _, message = await result(harness, await harness.imagine("a fox", steps=None))
    params = read_parameters(message.attachments[0].data)
    assert params is not None
    assert (params.steps, params.cfg_scale, params.negative_prompt) == (20, 6.5, "blurry")
    assert "your 30 is over the limit" in fields(message.embeds[0])["Your defaults"]


async def test_private_delivery_answers_only_me_and_nothing_reaches_the_channel(
    harness: Harness,
) -> None:
    await harness.start()
    await choose(harness, await open_panel(harness), "delivery", "private")

    job_id, message = await result(harness, await harness.imagine("a fox"))

    assert message.is_ephemeral and message.attachments
    assert public_messages(harness) == []
    assert harness.engine.job(job_id).delivery["mode"] == "interaction"
    [image] = harness.engine.library.images_of_job(job_id)
    assert image.message_url is None  # a private message is no link for the gallery


async def test_dm_delivery_sends_to_the_dms_and_says_where(harness: Harness) -> None:
    await harness.start()
    await choose(harness, await open_panel(harness), "delivery", "dm")
    handle = await harness.imagine("a fox")

    job_id, message = await result(harness, handle)

    dm = harness.fake.rest.dm_channels[harness.fake.user("alice").id]
    assert message.channel_id == dm and message.attachments
    assert harness.engine.job(job_id).delivery["mode"] == "dm"
    original = await wait_for(
        lambda: (m := harness.fake.original_response(handle.token)) and "📬" in m.content and m
    )
    assert original.is_ephemeral and f"/channels/@me/{dm}/" in original.content
    assert public_messages(harness) == []


async def test_closed_dms_fall_back_to_the_private_response(harness: Harness) -> None:
    await harness.start()
    harness.fake.rest.closed_dms.add(harness.fake.user("alice").id)
    await harness.engine.set_preferences(alice(harness), Preferences(delivery=Delivery.DM))

    job_id, message = await result(harness, await harness.imagine("a fox"))

    assert message.is_ephemeral and message.attachments
    assert harness.engine.job(job_id).delivery["mode"] == "interaction"
    assert public_messages(harness) == []


async def test_remix_mode_makes_reroll_ask_for_the_prompt_first(harness: Harness) -> None:
    await harness.start()
    job_id, message = await result(harness, await harness.imagine("a red fox", seed=11))
    panel = await open_panel(harness)
    toggled = await press(harness, panel, "imagine:set:remix")
    assert toggled.callback_type == 7 and harness.engine.preferences(alice(harness)).remix

    asked = await press(harness, message, f"imagine:reroll:{job_id}")

    assert asked.callback_type == 9
    submit = await harness.fake.submit_modal(asked, {"prompt": "a blue fox"})
    new_id, remixed = await result(harness, submit)
    params = read_parameters(remixed.attachments[0].data)
    assert new_id != job_id and params is not None and params.prompt == "a blue fox"
    assert params.seed != 11


async def test_reset_restores_the_servers_defaults_and_a_panel_outlives_a_restart(
    harness: Harness,
) -> None:
    await harness.start(styles=STYLES)
    panel = await open_panel(harness)
    await choose(harness, panel, "style", "oil")
    await harness.restart_bot()

    await choose(harness, panel, "aspect", "9:16")  # the old panel, after the restart
    mine = harness.engine.preferences(alice(harness))
    assert (mine.aspect, mine.style) == ("9:16", "oil")
    _, styled = await result(harness, await harness.imagine("a fox"))
    assert styled.embeds[0]["description"] == "a fox, oil painting"

    reset = await press(harness, panel, "imagine:set:reset")
    assert reset.callback_type == 7
    assert harness.engine.preferences(alice(harness)) == Preferences()
    assert harness.engine.store.preferences() == {}
    _, plain = await result(harness, await harness.imagine("a fox"))
    assert plain.embeds[0]["description"] == "a fox"


async def test_settings_are_per_person(harness: Harness) -> None:
    await harness.start()
    await choose(harness, await open_panel(harness), "aspect", "16:9")

    _, theirs = await result(harness, await harness.imagine("a fox", user="bob"))

    params = read_parameters(theirs.attachments[0].data)
    assert params is not None and params.width == params.height


async def test_remix_mode_asks_for_the_prompt_before_a_variation(harness: Harness) -> None:
    await harness.start()
    job_id, message = await result(harness, await harness.imagine("a red fox"))
    await harness.engine.set_preferences(alice(harness), Preferences(remix=True))
    image_id = f"{job_id}-0"

    asked = await press(harness, message, f"imagine:var:{image_id}")

    assert asked.callback_type == 9
    inputs = {
        c["custom_id"]: c for row in asked.callback_data["components"] for c in row["components"]
    }
    assert inputs["prompt"]["value"] == "a red fox"
    submit = await harness.fake.submit_modal(asked, {"prompt": "a red fox in snow"})
    new_id, varied = await result(harness, submit)
    params = read_parameters(varied.attachments[0].data)
    assert params is not None and params.prompt == "a red fox in snow"
    assert harness.engine.job(new_id).request.source_image_id == image_id
