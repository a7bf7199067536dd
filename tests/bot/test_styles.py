"""Styles on Discord: `/imagine style:` with autocomplete, the embed, `/mod styles`, reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import read_parameters
from tests.bot.conftest import Harness
from tests.fakes.discord import FakeInteraction

pytestmark = pytest.mark.timeout(90)

STYLES = {
    "oil": {"prompt": "{prompt}, oil painting", "negative_prompt": "photo", "label": "Oil"},
    "ink": {"prompt": "ink drawing of {prompt}"},
}


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def autocomplete(harness: Harness, typed: str) -> list[dict[str, str]]:
    fake = harness.fake
    complete = await fake.send_autocomplete(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine",
        {"prompt": "a fox", "style": typed}, focused="style",
    )  # fmt: skip
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{complete.id}/"))
    assert complete.callback_type == 8
    choices: list[dict[str, str]] = complete.callback_data["choices"]
    return choices


async def mod_styles(harness: Harness, by: str = "mod") -> FakeInteraction:
    fake = harness.fake
    return await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user(by), "mod", {}, "styles"
    )


async def test_imagine_style_option_wraps_the_prompt_and_the_embed_shows_the_style(
    harness: Harness,
) -> None:
    await harness.start(styles=STYLES)

    handle = await harness.imagine("a fox", style="oil")

    message = await harness.delivered(await harness.job_id(handle))
    [embed] = message.embeds
    assert fields(embed)["Style"] == "oil"
    assert embed["description"] == "a fox, oil painting"
    assert fields(embed)["Negative"] == "photo"
    params = read_parameters(message.attachments[0].data)
    assert params is not None and dict(params.extra)["Style"] == "oil"


async def test_an_unknown_style_is_refused_privately_with_the_closest_names(
    harness: Harness,
) -> None:
    await harness.start(styles=STYLES)

    handle = await harness.imagine("a fox --style oli")

    reply = await harness.answer(handle)
    assert reply.is_ephemeral
    assert "oli" in reply.content and "oil" in reply.content
    assert harness.engine.store.job_by_key(str(handle.id)) is None


async def test_style_autocomplete_offers_the_styles_that_match(harness: Harness) -> None:
    await harness.start(styles=STYLES)

    assert await autocomplete(harness, "") == [
        {"name": "Oil (oil)", "value": "oil"},
        {"name": "ink", "value": "ink"},
    ]
    assert await autocomplete(harness, "OI") == [{"name": "Oil (oil)", "value": "oil"}]


async def test_mod_styles_lists_every_style_with_its_template(harness: Harness) -> None:
    await harness.start(styles=STYLES)

    reply = await harness.answer(await mod_styles(harness))

    assert reply.is_ephemeral
    lines = reply.content.splitlines()
    assert lines == [
        "**oil** (Oil): `{prompt}, oil painting` · no: `photo`",
        "**ink**: `ink drawing of {prompt}`",
    ]


async def test_mod_styles_stays_within_one_message_however_many_styles(
    harness: Harness,
) -> None:
    many = {f"style-{i:02}": {"prompt": "{prompt}, " + "very " * 40 + "long"} for i in range(60)}
    await harness.start(styles=many)

    reply = await harness.answer(await mod_styles(harness))

    assert len(reply.content) <= 2000
    assert reply.content.endswith("more.")


async def test_mod_styles_is_for_moderators_only(harness: Harness) -> None:
    await harness.start(styles=STYLES)

    reply = await harness.answer(await mod_styles(harness, by="alice"))

    assert reply.content == "Only moderators can use this command."


async def test_a_reload_offers_new_styles_at_once(harness: Harness, tmp_path: Path) -> None:
    await harness.start()
    assert await autocomplete(harness, "") == []
    config = tmp_path / "config.toml"
    harness.config_path = str(config)
    settings = harness.settings
    assert settings is not None
    config.write_text(
        f"""
[engine]
model = {str(settings.engine.model)!r}
data_dir = {str(settings.engine.data_dir)!r}
[limits]
default_steps = 2
max_per_user = 50
[bot]
api_base = {settings.bot.api_base!r}
gateway_url = {settings.bot.gateway_url!r}
[web]
enabled = false
[styles.ink]
prompt = "ink drawing of {{prompt}}"
""",
        encoding="utf-8",
    )

    reloaded = await harness.answer(
        await harness.fake.send_slash_command(
            harness.fake.guild.id, harness.fake.text_channel.id, harness.fake.user("mod"),
            "mod", {}, "reload",
        )
    )  # fmt: skip

    assert reloaded.content.startswith("Config reloaded")
    assert await autocomplete(harness, "") == [{"name": "ink", "value": "ink"}]
    handle = await harness.imagine("a fox --style ink")
    message = await harness.delivered(await harness.job_id(handle))
    assert fields(message.embeds[0])["Style"] == "ink"
