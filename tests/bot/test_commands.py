"""/queue, /cancel, /status, and the same interaction delivered twice."""

from __future__ import annotations

import pytest

from tests.bot.conftest import Harness, wait_for

pytestmark = pytest.mark.timeout(90)


async def command(harness: Harness, name: str, user: str = "alice", **options: object):
    fake = harness.fake
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user(user), name, options
    )
    return await harness.answer(handle)


async def test_queue_lists_your_jobs_with_positions_and_the_total(harness: Harness) -> None:
    await harness.start()
    slow = await harness.job_id(await harness.imagine("slow", user="bob", steps=40))
    mine = await harness.job_id(await harness.imagine("mine"))

    reply = await command(harness, "queue")

    assert reply.is_ephemeral
    assert f"`{mine}` position 1" in reply.content and slow not in reply.content
    assert "In the queue: 1 waiting, 1 running." in reply.content
    assert "Your tier: standard (1 turn per round)" in reply.content


async def test_queue_names_a_boosted_roles_tier(harness: Harness) -> None:
    role = next(r for r in harness.fake.guild.roles if r.name == "Moderator")
    await harness.start(limits={"roles": {str(role.id): {"weight": 3}}})
    bob = harness.fake.guild.member(harness.fake.user("bob").id)
    assert bob is not None
    bob.role_ids.append(role.id)

    reply = await command(harness, "queue", user="bob")

    assert "Your tier: 3 turns per round" in reply.content


async def test_cancel_without_an_id_cancels_your_newest_job(harness: Harness) -> None:
    await harness.start()
    await harness.imagine("slow", user="bob", steps=40)
    handle = await harness.imagine("mine")
    job_id = await harness.job_id(handle)

    reply = await command(harness, "cancel")

    assert reply.content == f"Cancelled job `{job_id}`."
    message = await harness.delivered(job_id)
    assert "Cancelled" in message.content


async def test_cancel_of_someone_elses_job_is_refused(harness: Harness) -> None:
    await harness.start()
    await harness.imagine("slow", user="bob", steps=40)
    job_id = await harness.job_id(await harness.imagine("mine"))

    reply = await command(harness, "cancel", user="bob", job=job_id)

    assert "only its requester or a moderator" in reply.content
    assert harness.engine.job(job_id).state == "queued"


async def test_status_names_the_model_device_and_queue(harness: Harness) -> None:
    await harness.start()

    reply = await command(harness, "status")

    assert "**Model**:" in reply.content and "**Device**: cpu" in reply.content
    assert "**Queue**: 0 waiting, 0 running" in reply.content
    # No inpainting model in the default test config: /status says why the edits are off.
    assert "**Zoom out, pan, vary region**: off: " in reply.content
    assert 'kind = "inpaint"' in reply.content


async def test_the_same_interaction_twice_makes_one_job_and_one_result(harness: Harness) -> None:
    await harness.start()
    handle = await harness.imagine()
    job_id = await harness.job_id(handle)

    await harness.fake.dispatch("INTERACTION_CREATE", handle.payload)
    await harness.delivered(job_id)

    jobs = harness.engine.store.recent_jobs(limit=10)
    assert [j.id for j in jobs] == [job_id]
    posted = [m for m in harness.fake.rest.messages.values() if m.attachments]
    assert len(posted) == 1
    await wait_for(lambda: len(harness.fake.calls_to("POST", r"/callback$")) == 2)
