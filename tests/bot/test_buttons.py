"""Result buttons: re-roll, variation, upscale and delete; old buttons work after a restart."""

from __future__ import annotations

import pytest

from engine import read_parameters
from tests.bot.conftest import Harness, wait_for
from tests.fakes.discord import FakeMessage

pytestmark = pytest.mark.timeout(120)


async def first_result(harness: Harness, **options: object) -> tuple[str, FakeMessage]:
    handle = await harness.imagine(**options)
    job_id = await harness.job_id(handle)
    return job_id, await harness.delivered(job_id)


async def press(harness: Harness, message: FakeMessage, custom_id: str, user: str = "alice", **kw):
    return await harness.fake.press_button(message.id, custom_id, harness.fake.user(user), **kw)


async def pressed_job(harness: Harness, message: FakeMessage, custom_id: str, user: str = "alice"):
    handle = await press(harness, message, custom_id, user)
    job_id = await harness.job_id(handle)
    return job_id, await harness.delivered(job_id)


async def test_reroll_makes_a_new_job_with_a_new_seed(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness)

    new_id, result = await pressed_job(harness, message, f"imagine:reroll:{job_id}", "bob")

    assert new_id != job_id
    params = read_parameters(result.attachments[0].data)
    assert params is not None and params.prompt == "a red fox"
    assert harness.engine.job(new_id).requester.user_id == str(harness.fake.user("bob").id)
    assert result.id != message.id


async def test_variation_and_upscale_start_from_the_image(harness: Harness) -> None:
    await harness.start()
    # 4 steps: upscale_strength 0.3 × 2 steps would leave img2img no step at all (engine issue).
    job_id, message = await first_result(harness, steps=4)
    source = read_parameters(message.attachments[0].data)

    _, variation = await pressed_job(harness, message, f"imagine:var:{job_id}-0")
    _, upscale = await pressed_job(harness, message, f"imagine:up:{job_id}-0")

    var_params = read_parameters(variation.attachments[0].data)
    up_params = read_parameters(upscale.attachments[0].data)
    assert var_params.width == source.width and ("Kind", "variation") in var_params.extra
    assert up_params.width == 2 * source.width and ("Kind", "upscale") in up_params.extra
    assert variation.embeds[0]["title"] == "Variation"
    assert upscale.embeds[0]["title"] == "Upscale"


async def test_delete_by_requester_removes_images_and_clears_the_message(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness)

    await press(harness, message, f"imagine:del:{job_id}")

    await wait_for(lambda: "Deleted" in message.content)
    assert message.attachments == [] and message.embeds == [] and message.components == []
    assert harness.engine.store.image(f"{job_id}-0") is None


async def test_delete_by_someone_else_is_refused(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness)

    handle = await press(harness, message, f"imagine:del:{job_id}", "bob")

    reply = await harness.answer(handle)
    assert reply.is_ephemeral and "only its requester or a moderator" in reply.content
    assert harness.engine.store.image(f"{job_id}-0") is not None
    assert len(message.attachments) == 1


async def test_delete_by_a_moderator_is_allowed(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness)

    await press(harness, message, f"imagine:del:{job_id}", "mod")

    await wait_for(lambda: "Deleted" in message.content)
    assert harness.engine.store.image(f"{job_id}-0") is None


async def test_old_buttons_work_after_a_restart(harness: Harness) -> None:
    await harness.start()
    job_id, message = await first_result(harness)
    await harness.stop()

    await harness.start()
    new_id, result = await pressed_job(harness, message, f"imagine:reroll:{job_id}")
    await press(harness, result, f"imagine:del:{new_id}")

    assert read_parameters(result.attachments[0].data).prompt == "a red fox"
    await wait_for(lambda: "Deleted" in result.content)
