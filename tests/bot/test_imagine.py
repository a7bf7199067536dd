"""/imagine end to end: defer, progress, final message with PNGs matching the embed."""

from __future__ import annotations

import discord
import pytest

from engine import read_parameters
from tests.bot.conftest import GALLERY, Harness

pytestmark = pytest.mark.timeout(90)

CALLBACK = r"/interactions/\d+/[^/]+/callback$"
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original$"


def fields(embed: dict) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


async def test_imagine_defers_shows_progress_and_posts_pngs_matching_the_embed(
    harness: Harness,
) -> None:
    await harness.start()
    fake = harness.fake

    handle = await harness.imagine("a *red* fox @everyone", steps=3, count=2, seed=11)

    assert await harness.ack_latency_s(handle) < 3
    defer = fake.calls_to("POST", CALLBACK)[-1]
    assert defer.json == {"type": 5}
    job_id = await harness.job_id(handle)
    message = await harness.delivered(job_id)
    assert message.id == fake.original_response(handle.token).id
    edits = fake.calls_to("PATCH", ORIGINAL)
    assert len(edits) >= 2, "a progress edit comes before the result"
    progress_words = ("Queued", "Starting", "Step")
    assert any(word in (h.get("content") or "") for h in message.history for word in progress_words)
    [embed] = message.embeds
    got = fields(embed)
    assert embed["description"] == discord.utils.escape_markdown("a *red* fox @everyone")
    assert len(message.attachments) == 2
    for index, attachment in enumerate(message.attachments):
        params = read_parameters(attachment.data)
        assert params is not None
        assert params.prompt == "a *red* fox @everyone"
        assert f"{index + 1}: {params.seed}" in got["Seed"]
        assert got["Steps"] == str(params.steps) == "3"
        assert got["Size"] == f"{params.width}×{params.height}"
        assert got["Scheduler"] == params.sampler
        assert got["Guidance"] == f"{params.cfg_scale:g}"
    assert message.allowed_mentions == {"parse": []}
    custom_ids = [
        c.get("custom_id") or c.get("url") for row in message.components for c in row["components"]
    ]
    assert f"imagine:reroll:{job_id}" in custom_ids
    assert f"imagine:var:{job_id}-1" in custom_ids and f"imagine:up:{job_id}-0" in custom_ids
    assert f"{GALLERY}/images/{job_id}-0" in custom_ids
    assert harness.engine.job(job_id).delivery["mode"] == "interaction"


async def test_imagine_model_option_picks_a_registry_model_shown_in_the_embed(
    harness: Harness,
    tiny_model_dir,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from engine import tinymodel

    other = tinymodel.build(tmp_path / "tiny-b", seed=1)
    await harness.start(
        models={"a": {"path": str(tiny_model_dir)}, "b": {"path": str(other), "label": "Tiny B"}},
        engine={"model": "a"},
    )
    fake = harness.fake
    complete = await fake.send_autocomplete(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine",
        {"prompt": "a fox", "model": ""}, focused="model",
    )  # fmt: skip
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{complete.id}/"))
    assert complete.callback_type == 8
    assert complete.callback_data == {
        "choices": [{"name": "a", "value": "a"}, {"name": "Tiny B (b)", "value": "b"}]
    }

    handle = await harness.imagine("a fox", model="b")
    message = await harness.delivered(await harness.job_id(handle))
    assert fields(message.embeds[0])["Model"] == "b"
    params = read_parameters(message.attachments[0].data)
    assert params is not None and params.model == "b"
