"""Delivery under faults: late tokens, 429s, 5xx, resets, gateway drops, size limits, flags."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from engine import read_parameters
from tests.bot.conftest import GALLERY, Harness, wait_for
from tests.fakes.discord import FakeInteraction, FakeMessage
from tests.fakes.worker import FlaggingWorker

pytestmark = pytest.mark.timeout(120)

ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original$"


def original_of(handle: FakeInteraction) -> str:
    """The path of one interaction's original response (faults aimed at it alone)."""
    return rf"/webhooks/\d+/{re.escape(handle.token)}/messages/@original$"


CHANNEL_POST = r"/channels/\d+/messages$"


def results_of(harness: Harness, job_id: str) -> list[FakeMessage]:
    """Every message (any channel) that carries this job's images."""
    return [
        m
        for m in harness.fake.rest.messages.values()
        if not m.is_deleted and any(a.filename.startswith(job_id) for a in m.attachments)
    ]


async def queued_behind_a_slow_job(
    harness: Harness, prompt: str = "a red fox", **bot: Any
) -> tuple[FakeInteraction, str]:
    """Start the bot (with these `[bot]` settings), queue a slow job from bob, then alice's
    `prompt` behind it; return alice's interaction and job id."""
    await harness.start(**({"bot": bot} if bot else {}))
    await harness.job_id(await harness.imagine("slow one", user="bob", steps=30))
    handle = await harness.imagine(prompt)
    return handle, await harness.job_id(handle)


async def test_result_after_the_token_died_goes_to_the_channel_mentioning_only_the_requester(
    harness: Harness,
) -> None:
    handle, job_id = await queued_behind_a_slow_job(
        harness, "late fox <@&300000000000000002> @everyone"
    )
    fake = harness.fake
    await harness.ack_latency_s(handle)

    fake.expire_token(handle.token)
    message = await harness.delivered(job_id)

    alice = fake.user("alice").id
    assert message.channel_id == fake.text_channel.id and message.webhook_id is None
    assert message.content.startswith(f"<@{alice}>")
    assert message.allowed_mentions == {"parse": [], "users": [alice]}
    assert len(message.attachments) == 1
    assert harness.engine.job(job_id).delivery["mode"] == "channel"
    assert results_of(harness, job_id) == [message]


async def test_result_past_fifteen_minutes_skips_the_token_by_the_clock(harness: Harness) -> None:
    await harness.start(clock=lambda: time.time() + 16 * 60)

    handle = await harness.imagine()
    job_id = await harness.job_id(handle)
    message = await harness.delivered(job_id)

    assert harness.engine.job(job_id).delivery["mode"] == "channel"
    assert message.content.startswith(f"<@{harness.fake.user('alice').id}>")
    assert harness.fake.calls_to("PATCH", ORIGINAL) == []


async def test_429s_5xx_and_resets_on_the_upload_still_deliver_exactly_once(
    harness: Harness,
) -> None:
    handle, job_id = await queued_behind_a_slow_job(harness, progress_interval_s=600)
    fake = harness.fake
    await harness.ack_latency_s(handle)
    await wait_for(lambda: fake.calls_to("PATCH", original_of(handle)))  # the one progress edit

    fake.fail_next("PATCH", original_of(handle), 429, count=2, retry_after=0.1)
    fake.fail_next("PATCH", original_of(handle), "reset", count=2)
    fake.fail_next("PATCH", original_of(handle), 502, count=1)
    message = await harness.delivered(job_id)

    faults = [c.fault for c in fake.calls_to("PATCH", original_of(handle)) if c.fault]
    assert sorted(faults) == ["429", "429", "502", "reset", "reset"]
    assert results_of(harness, job_id) == [message]
    assert len(harness.engine.store.images_of_job(job_id)) == 1
    assert read_parameters(message.attachments[0].data).seed == 7


async def test_429s_on_progress_edits_do_not_stop_the_result(harness: Harness) -> None:
    await harness.start()
    fake = harness.fake
    fake.fail_next("PATCH", ORIGINAL, 429, count=4, retry_after=0.2)

    handle = await harness.imagine(steps=6)
    job_id = await harness.job_id(handle)
    message = await harness.delivered(job_id)

    assert results_of(harness, job_id) == [message]


async def test_a_long_429_gives_up_fast_and_posts_to_the_channel(harness: Harness) -> None:
    handle, job_id = await queued_behind_a_slow_job(
        harness, progress_interval_s=600, max_retry_after_s=30
    )
    fake = harness.fake
    await wait_for(lambda: fake.calls_to("PATCH", original_of(handle)))

    fake.fail_next("PATCH", original_of(handle), 429, count=1, retry_after=3600)
    started = time.monotonic()
    message = await harness.delivered(job_id)

    assert time.monotonic() - started < 30
    assert harness.engine.job(job_id).delivery["mode"] == "channel"
    assert results_of(harness, job_id) == [message]


async def test_when_nothing_can_be_uploaded_the_user_gets_a_gallery_link(
    harness: Harness,
) -> None:
    handle, job_id = await queued_behind_a_slow_job(
        harness, progress_interval_s=600, delivery_attempts=2
    )
    fake = harness.fake
    await wait_for(lambda: fake.calls_to("PATCH", original_of(handle)))

    fake.fail_next("PATCH", original_of(handle), "reset", count=4)
    fake.fail_next("POST", CHANNEL_POST, "reset", count=2)
    message = await harness.delivered(job_id)

    note = harness.engine.job(job_id).delivery
    assert note["mode"] == "link-channel"
    assert f"{GALLERY}/images/{job_id}-0" in message.content
    assert message.attachments == []
    assert harness.engine.store.image(f"{job_id}-0") is not None
    assert len(harness.engine.store.images_of_job(job_id)) == 1


async def test_a_gateway_drop_mid_job_still_delivers_once(harness: Harness) -> None:
    _, job_id = await queued_behind_a_slow_job(harness)
    fake = harness.fake

    await fake.drop_gateway(code=None)
    message = await harness.delivered(job_id)

    assert results_of(harness, job_id) == [message]
    await fake.wait_for_gateway(lambda e: e.direction == "in" and e.op == 6)


@pytest.mark.parametrize("fake_options", [{"attachment_size_limit": 4096}])
async def test_images_over_the_upload_limit_are_reencoded_or_linked(harness: Harness) -> None:
    await harness.start(limits={"max_size_px": 512})

    handle = await harness.imagine(count=2)
    job_id = await harness.job_id(handle)
    message = await harness.delivered(job_id)

    total = sum(len(a.data) for a in message.attachments)
    assert total <= 4096
    names = [a.filename for a in message.attachments]
    linked = [i for i in range(2) if not any(n.startswith(f"{job_id}-{i}") for n in names)]
    assert all(n.endswith((".png", ".jpg")) for n in names)
    assert linked or any(n.endswith(".jpg") for n in names), "the limit was not exercised"
    for index in linked:
        assert f"{GALLERY}/images/{job_id}-{index}" in message.content


async def test_flagged_images_are_not_posted_outside_age_restricted_channels(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.start(worker_wrapper=FlaggingWorker)

    handle = await harness.imagine()
    message = await harness.delivered(await harness.job_id(handle))

    assert message.attachments == []
    assert "flagged by the safety checker" in message.content


async def test_flagged_images_are_spoilered_in_age_restricted_channels(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.start(worker_wrapper=FlaggingWorker)

    handle = await harness.imagine(channel_id=harness.fake.nsfw_channel.id)
    message = await harness.delivered(await harness.job_id(handle))

    [attachment] = message.attachments
    assert attachment.filename.startswith("SPOILER_")


async def test_a_job_cut_off_by_a_restart_is_delivered_once_afterwards(harness: Harness) -> None:
    handle, job_id = await queued_behind_a_slow_job(harness)
    await harness.ack_latency_s(handle)

    await harness.stop()
    await harness.start()
    message = await harness.delivered(job_id)

    assert message.id == harness.fake.original_response(handle.token).id
    assert results_of(harness, job_id) == [message]


async def test_a_result_finished_while_the_bot_was_away_is_delivered_at_start(
    harness: Harness,
) -> None:
    await harness.start()
    handle = await harness.imagine()
    job_id = await harness.job_id(handle)
    await harness.ack_latency_s(handle)

    async def finished() -> None:
        await wait_for(lambda: harness.engine.job(job_id).state == "done", 30)

    await harness.restart_bot(before_start=finished)
    message = await harness.delivered(job_id)

    assert results_of(harness, job_id) == [message]


async def test_a_command_answered_while_shutting_down_is_delivered_once_after_the_restart(
    harness: Harness,
) -> None:
    # Shutdown closes delivery before the client's HTTP session; a command still being answered
    # in between must not post through the closing session (it failed: "Session is closed").
    await harness.start()
    assert harness.bot is not None and harness.engine is not None
    engine = harness.engine
    await harness.bot.delivery.close()
    handle = await harness.imagine()
    job_id = await harness.job_id(handle)
    await harness.ack_latency_s(handle)
    await wait_for(lambda: engine.job(job_id).state == "done", 30)
    assert results_of(harness, job_id) == [] and engine.job(job_id).delivered_at is None

    await harness.restart_bot()
    message = await harness.delivered(job_id)

    assert message.id == harness.fake.original_response(handle.token).id
    assert results_of(harness, job_id) == [message]
