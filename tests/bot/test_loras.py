"""LoRAs on Discord: `/imagine lora:` with autocomplete, `--lora`, the embed, `/mod loras`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import read_parameters
from tests.bot.conftest import Harness
from tests.fakes.discord import FakeInteraction

pytestmark = pytest.mark.timeout(90)


def loras(path: Path) -> dict[str, Any]:
    return {
        "fox": {"path": str(path), "weight": 0.7, "label": "Fox fur"},
        "ink": {"path": str(path)},
    }


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def autocomplete(harness: Harness, typed: str) -> list[dict[str, str]]:
    fake = harness.fake
    complete = await fake.send_autocomplete(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine",
        {"prompt": "a fox", "lora": typed}, focused="lora",
    )  # fmt: skip
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{complete.id}/"))
    assert complete.callback_type == 8
    choices: list[dict[str, str]] = complete.callback_data["choices"]
    return choices


async def mod_loras(harness: Harness, by: str = "mod") -> FakeInteraction:
    fake = harness.fake
    return await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user(by), "mod", {}, "loras"
    )


async def test_imagine_lora_option_and_flag_reach_the_image_the_embed_and_the_png(
    harness: Harness, tiny_lora: Path
) -> None:
    await harness.start(loras=loras(tiny_lora))

    handle = await harness.imagine("a fox --lora ink:-0.5", lora="fox:0.8")

    message = await harness.delivered(await harness.job_id(handle))
    [embed] = message.embeds
    assert fields(embed)["LoRAs"] == "fox 0.8, ink -0.5"
    params = read_parameters(message.attachments[0].data)
    assert params is not None
    assert params.prompt == "a fox <lora:fox:0.8> <lora:ink:-0.5>"


async def test_a_lora_weight_out_of_range_is_refused_privately_with_the_range(
    harness: Harness, tiny_lora: Path
) -> None:
    await harness.start(loras=loras(tiny_lora))

    handle = await harness.imagine("a fox", lora="fox:5")

    reply = await harness.answer(handle)
    assert reply.is_ephemeral
    assert "expected a weight -2–2, got 5" in reply.content
    assert harness.engine is not None and harness.engine.store.job_by_key(str(handle.id)) is None


async def test_an_unknown_lora_is_refused_with_the_closest_names(
    harness: Harness, tiny_lora: Path
) -> None:
    await harness.start(loras=loras(tiny_lora))

    reply = await harness.answer(await harness.imagine("a fox --lora fxo"))

    assert reply.is_ephemeral and "did you mean fox?" in reply.content


async def test_lora_autocomplete_offers_matching_loras_and_keeps_a_typed_weight(
    harness: Harness, tiny_lora: Path
) -> None:
    await harness.start(loras=loras(tiny_lora))

    assert await autocomplete(harness, "") == [
        {"name": "Fox fur (fox) · 0.7", "value": "fox"},
        {"name": "ink · 1", "value": "ink"},
    ]
    assert await autocomplete(harness, "FUR:0.4") == [
        {"name": "Fox fur (fox) · 0.4", "value": "fox:0.4"}
    ]


async def test_mod_loras_lists_every_lora_for_moderators(harness: Harness, tiny_lora: Path) -> None:
    await harness.start(loras=loras(tiny_lora))

    reply = await harness.answer(await mod_loras(harness))
    refused = await harness.answer(await mod_loras(harness, by="alice"))

    assert reply.is_ephemeral
    assert reply.content.splitlines() == [
        "**fox** (Fox fur): weight 0.7 · every model",
        "**ink**: weight 1 · every model",
    ]
    assert refused.content == "Only moderators can use this command."
