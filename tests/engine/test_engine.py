"""The engine end to end on the tiny model: queue, fairness, limits, events, images, records."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine import (
    Banned,
    Blocked,
    Cancelled,
    Engine,
    Failed,
    Finished,
    Forbidden,
    GenerationRequest,
    InvalidRequest,
    Kind,
    NotFound,
    Progress,
    Queued,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    Requester,
    Started,
    read_parameters,
)
from tests.conftest import gate, wait_done, wait_until

EngineFactory = Callable[..., Any]


def png_bytes(engine: Engine, event: Finished, index: int = 0) -> bytes:
    return engine.store.image_path(event.images[index].file_name).read_bytes()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_job_runs_to_finished_with_images_on_disk_and_recorded(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    job = await engine.submit(make_request(count=2), make_requester())
    assert job.state == "queued"
    assert engine.store.job(job.id) is not None  # durable before submit returns
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    assert [image.seed for image in event.images] == [7, 8]
    for image in event.images:
        assert engine.store.image_path(image.file_name).exists()
    assert engine.job(job.id).state == "done"
    assert engine.job(job.id).image_ids == tuple(image.id for image in event.images)


async def test_events_arrive_in_order_with_progress_and_a_preview(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"preview_every_steps": 2})
    job = await engine.submit(make_request(steps=6), make_requester())
    events = []
    async for event in engine.events(job.id):
        events.append(event)
    kinds = [type(e) for e in events]
    assert kinds[0] is Queued
    assert Started in kinds
    assert kinds[-1] is Finished
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps) and steps[-1] == 6
    previews = [e.preview_png for e in events if isinstance(e, Progress) and e.preview_png]
    assert previews, "a listener gets previews every few steps"
    assert Image.open(io.BytesIO(previews[0])).mode == "RGB"


async def test_same_request_and_seed_give_identical_bytes(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    first = await engine.submit(make_request(seed=42), make_requester())
    second = await engine.submit(make_request(seed=42), make_requester())
    a, b = await wait_done(engine, first.id), await wait_done(engine, second.id)
    assert pixels(png_bytes(engine, a)).tolist() == pixels(png_bytes(engine, b)).tolist()


async def test_batched_images_match_alone_within_one_level(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    alone_engine = await make_engine()
    seeds = [11, 12, 13]
    alone = []
    for seed in seeds:
        job = await alone_engine.submit(make_request(f"fox {seed}", seed=seed), make_requester())
        alone.append(pixels(png_bytes(alone_engine, await wait_done(alone_engine, job.id))))
    await alone_engine.close()
    batched_engine = await make_engine(engine={"max_batch": 4}, gated=True)
    async with gate(batched_engine).held():  # a job ahead holds the worker: all three queue up
        await batched_engine.submit(make_request("ahead"), make_requester("ahead"))
        await wait_until(lambda: gate(batched_engine).batches)
        jobs = [
            await batched_engine.submit(
                make_request(f"fox {seed}", seed=seed), make_requester(f"u{seed}")
            )
            for seed in seeds
        ]
    together = [
        pixels(png_bytes(batched_engine, await wait_done(batched_engine, job.id))) for job in jobs
    ]
    for a, b in zip(alone, together, strict=True):
        assert np.abs(a - b).max() <= 1
    assert [len(batch.items) for batch in gate(batched_engine).batches] == [1, 3]


async def test_fairness_a_queues_four_b_queues_one_b_runs_second(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(gated=True)
    started: list[str] = []
    engine.listen(lambda e: started.append(e.job_id) if isinstance(e, Started) else None)
    async with gate(engine).held():
        a_jobs = [await engine.submit(make_request(), make_requester("a")) for _ in range(4)]
        b_job = await engine.submit(make_request(), make_requester("b"))
    for job in [*a_jobs, b_job]:
        await wait_done(engine, job.id)
    assert started[1] == b_job.id
    assert started[0] == a_jobs[0].id


async def test_queue_position_and_eta_are_reported(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(gated=True)
    async with gate(engine).held():
        jobs = [await engine.submit(make_request(), make_requester(f"u{i}")) for i in range(3)]
        positions = [engine.job(job.id).position for job in jobs]
        assert sorted(p for p in positions if p is not None)[-1] >= 2
        assert all(
            engine.job(job.id).eta_s is not None for job in jobs if engine.job(job.id).position
        )
    for job in jobs:
        await wait_done(engine, job.id)


async def test_queue_full_refuses_new_work_and_keeps_accepted_jobs(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"max_queue": 3, "max_per_user": 10}, gated=True)
    async with gate(engine).held():
        accepted = [await engine.submit(make_request(), make_requester(f"u{i}")) for i in range(3)]
        with pytest.raises(QueueFull) as caught:
            await engine.submit(make_request(), make_requester("late"))
        assert caught.value.limit == 3
    for job in accepted:
        assert isinstance(await wait_done(engine, job.id), Finished)


async def test_per_user_cap_refuses_with_the_limit(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"max_per_user": 2}, gated=True)
    async with gate(engine).held():
        for _ in range(2):
            await engine.submit(make_request(), make_requester())
        with pytest.raises(QueueFull) as caught:
            await engine.submit(make_request(), make_requester())
        assert caught.value.is_per_requester and caught.value.limit == 2
        await engine.submit(make_request(), make_requester("bob"))


async def test_cooldown_refuses_with_a_retry_time(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"cooldown_s": 30})
    await engine.submit(make_request(), make_requester())
    with pytest.raises(RateLimited) as caught:
        await engine.submit(make_request(), make_requester())
    assert 0 < caught.value.retry_after_s <= 30


async def test_daily_quota_counts_images(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"daily_quota": 3})
    await engine.submit(make_request(count=2), make_requester())
    with pytest.raises(QuotaExceeded) as caught:
        await engine.submit(make_request(count=2), make_requester())
    assert caught.value.limit == 3 and caught.value.used == 2
    await engine.submit(make_request(count=1), make_requester())


async def test_role_override_lifts_the_cooldown(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"cooldown_s": 30, "roles": {"vip": {"cooldown_s": 0}}})
    vip = make_requester(source="discord", role_ids=("vip",))
    await engine.submit(make_request(), vip)
    await engine.submit(make_request(), vip)


async def test_duplicate_submission_makes_one_job(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    first, second = await asyncio.gather(
        engine.submit(make_request(), make_requester(), idempotency_key="interaction-1"),
        engine.submit(make_request(), make_requester(), idempotency_key="interaction-1"),
    )
    assert first.id == second.id
    await wait_done(engine, first.id)
    again = await engine.submit(make_request(), make_requester(), idempotency_key="interaction-1")
    assert again.id == first.id
    assert len(engine.store.recent_jobs()) == 1


async def test_invalid_request_is_refused_before_anything_is_queued(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidRequest) as caught:
        await engine.submit(make_request(steps=100_000), make_requester())
    assert caught.value.field == "steps"
    assert engine.store.recent_jobs() == []


async def test_blocked_prompt_is_audited(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(moderation={"blocklist": ["gore"]})
    with pytest.raises(Blocked):
        await engine.submit(make_request("g o r e"), make_requester())
    await asyncio.sleep(0.2)
    entries = engine.store.audit(action="rejected")
    assert entries and entries[0].rule == "blocklist" and entries[0].prompt == "g o r e"
    assert engine.store.recent_jobs() == []


async def test_banned_user_is_refused_until_unbanned(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    moderator = make_requester("mod", is_moderator=True)
    await engine.ban("web:alice", None, "spam", by=moderator)
    with pytest.raises(Banned) as caught:
        await engine.submit(make_request(), make_requester())
    assert caught.value.reason == "spam"
    with pytest.raises(Forbidden):
        await engine.ban("web:bob", None, "", by=make_requester("carol"))
    await engine.unban("web:alice", by=moderator)
    await engine.submit(make_request(), make_requester())


async def test_cancel_a_queued_job(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(gated=True)
    async with gate(engine).held():
        await engine.submit(make_request(), make_requester("other"))
        job = await engine.submit(make_request(), make_requester())
        view = await engine.cancel(job.id, by=make_requester())
        assert view.state == "cancelled"
    assert isinstance(await wait_done(engine, job.id), Cancelled)


async def test_cancel_a_running_job_stops_it_without_images(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    job = await engine.submit(make_request(steps=100), make_requester())
    async for event in engine.events(job.id):
        if isinstance(event, Progress) and event.step >= 2:
            await engine.cancel(job.id, by=make_requester())
        if isinstance(event, Cancelled | Finished | Failed):
            break
    assert isinstance(event, Cancelled)
    await asyncio.sleep(0.2)
    assert engine.job(job.id).state == "cancelled"
    assert engine.store.images_of_job(job.id) == []


async def test_only_the_requester_or_a_moderator_may_cancel(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(gated=True)
    async with gate(engine).held():
        job = await engine.submit(make_request(), make_requester())
        with pytest.raises(Forbidden):
            await engine.cancel(job.id, by=make_requester("mallory"))
        await engine.cancel(job.id, by=make_requester("mod", is_moderator=True))


async def test_variation_and_upscale_reuse_a_stored_image(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"max_size_px": 64, "min_size_px": 32})
    first = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    source = first.images[0]
    who = make_requester()
    variation = await engine.submit(await engine.variation_request(source.id, who), who)
    upscale = await engine.submit(await engine.upscale_request(source.id, who), who)
    v, u = await wait_done(engine, variation.id), await wait_done(engine, upscale.id)
    assert v.images[0].kind == Kind.VARIATION and v.images[0].parent_image_id == source.id
    assert (v.images[0].width, v.images[0].height) == (32, 32)
    assert (u.images[0].width, u.images[0].height) == (64, 64)
    assert u.images[0].seed == source.seed
    with pytest.raises(InvalidRequest, match="largest size"):
        await engine.submit(await engine.upscale_request(u.images[0].id, who), who)


async def test_variation_of_a_missing_image_is_not_found(
    make_engine: EngineFactory, make_requester: Any
) -> None:
    engine = await make_engine()
    with pytest.raises(NotFound):
        await engine.variation_request("nope-0", make_requester())


async def test_png_parameters_parse_back_to_the_request(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    request = make_request("a red fox, at dusk --no blur", guidance=6.5, scheduler="Euler a")
    event = await wait_done(engine, (await engine.submit(request, make_requester())).id)
    parameters = read_parameters(png_bytes(engine, event))
    assert parameters is not None
    assert parameters.prompt == "a red fox, at dusk"
    assert parameters.negative_prompt == "blur"
    assert (parameters.steps, parameters.sampler, parameters.cfg_scale) == (4, "Euler a", 6.5)
    assert (parameters.seed, parameters.width, parameters.height) == (7, 32, 32)


async def test_every_scheduler_runs(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    for name in ("DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM"):
        job = await engine.submit(make_request(scheduler=name), make_requester(name))
        assert isinstance(await wait_done(engine, job.id), Finished), name


async def test_the_event_loop_keeps_running_during_a_job(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    job = await engine.submit(make_request(steps=40), make_requester())
    await wait_done(engine, job.id)
    task.cancel()
    assert ticks > 0


async def test_status_reports_model_device_and_queue(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    status = engine.status()
    assert status.device == "cpu" and status.dtype == "float32" and status.native_px == 32
    assert status.is_ready and status.queue_length == 0 and status.images_made == 1
    assert status.seconds_per_step is not None


async def test_jobs_lists_a_requesters_active_jobs_in_order(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(gated=True)
    async with gate(engine).held():
        mine = [await engine.submit(make_request(), make_requester()) for _ in range(2)]
        await engine.submit(make_request(), make_requester("bob"))
        assert [v.id for v in engine.jobs("web:alice")] == [j.id for j in mine]
        assert len(engine.jobs()) == 3


async def test_delivery_is_marked_once(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    person = make_requester(source="discord")
    job = await engine.submit(make_request(), person, origin={"discord": {"token": "t"}})
    # The same person signed in to the gallery: nothing for the bot to deliver.
    on_the_web = await engine.submit(make_request(), person, origin={"web": "form"})
    await wait_done(engine, job.id)
    await wait_done(engine, on_the_web.id)
    await asyncio.sleep(0.1)
    assert [v.id for v in engine.undelivered("discord")] == [job.id]
    assert await engine.mark_delivered(job.id, {"message_id": "1"})
    assert not await engine.mark_delivered(job.id, {"message_id": "2"})
    assert engine.undelivered("discord") == []


async def test_delete_image_by_author_or_moderator_only(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    event = await wait_done(
        engine, (await engine.submit(make_request(count=2), make_requester())).id
    )
    first, second = event.images
    with pytest.raises(Forbidden):
        await engine.delete_image(first.id, by=make_requester("mallory"))
    await engine.delete_image(first.id, by=make_requester())
    await engine.delete_image(second.id, by=make_requester("mod", is_moderator=True))
    assert engine.store.image(first.id) is None
    assert not engine.store.image_path(first.file_name).exists()


async def test_upscale_with_few_steps_still_runs_one_step(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(limits={"max_size_px": 64})
    first = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    request = await engine.upscale_request(first.images[0].id, make_requester())
    job = await engine.submit(dataclasses.replace(request, steps=2), make_requester())
    assert isinstance(await wait_done(engine, job.id), Finished)


async def test_a_burst_of_compatible_jobs_runs_as_one_call(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"max_batch": 4, "batch_window_s": 0.2}, gated=True)
    jobs = await asyncio.gather(
        *(engine.submit(make_request(seed=s), make_requester(f"u{s}")) for s in range(4))
    )
    for job in jobs:
        assert isinstance(await wait_done(engine, job.id), Finished)
    calls = [len(batch.items) for batch in gate(engine).batches]
    assert calls == [4]


async def test_max_batch_auto_is_one_on_the_cpu(make_engine: EngineFactory) -> None:
    engine = await make_engine()
    assert engine.settings.engine.max_batch == 0
    assert engine.status().workers[0].max_batch == 1


async def test_an_engine_on_a_first_release_database_finishes_its_queued_jobs(
    make_settings: Any, tmp_path: Any
) -> None:
    import shutil
    from pathlib import Path

    from engine import Engine, Store

    settings = make_settings()
    settings.data_path.mkdir(parents=True)
    v0 = Path(__file__).parent / "data" / "v0.sqlite3"
    shutil.copyfile(v0, settings.data_path / "imagine.sqlite3")
    engine = Engine(settings, Store(settings.engine.data_dir))
    await engine.start()
    try:
        for job_id in ("bbbbbbbbbbbb", "cccccccccccc"):  # queued, and running when it stopped
            assert isinstance(await wait_done(engine, job_id), Finished)
        assert engine.job("aaaaaaaaaaaa").image_ids == ("aaaaaaaaaaaa-0", "aaaaaaaaaaaa-1")
        with pytest.raises(Banned):
            await engine.submit(GenerationRequest("a fox"), Requester("discord", "44"))
    finally:
        await engine.close()


async def test_a_generated_png_reads_back_in_sd_parsers_with_model_name_and_hash(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    from tests.engine.test_pngmeta import _sd_parsers_reading

    engine = await make_engine()
    request = make_request('a "red" fox, ü <lora:x:0.5>', negative_prompt="blur, text")
    event = await wait_done(engine, (await engine.submit(request, make_requester())).id)
    reading = _sd_parsers_reading(png_bytes(engine, event))
    facts = engine.registry.facts("tiny")
    assert reading["prompt"] == 'a "red" fox, ü <lora:x:0.5>'
    assert reading["negative_prompt"] == "blur, text"
    assert (reading["model"], reading["model_hash"]) == ("tiny", facts.model_hash)
    assert len(facts.model_hash) == 10 and "/" not in str(reading["model"])


async def test_a_weight_2_role_gets_two_turns_to_a_weight_1_members_one(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    """[limits.roles."ID"] weight = 2: 6 jobs each, one worker, the starts go a a b a a b …"""
    engine = await make_engine(
        gated=True,
        limits={"max_per_user": 10, "roles": {"77": {"weight": 2}}},
    )
    booster = make_requester("booster", source="discord", role_ids=("77",))
    member = make_requester("member", source="discord")
    assert (engine.weight(booster), engine.weight(member)) == (2, 1)
    started: list[str] = []
    engine.listen(lambda e: started.append(e.job_id) if isinstance(e, Started) else None)
    owner: dict[str, str] = {}
    async with gate(engine).held():
        for who in (booster, member):
            for n in range(6):
                job = await engine.submit(make_request(f"{who.user_id} {n}", steps=1), who)
                owner[job.id] = who.user_id[0]
    for job_id in owner:
        await wait_done(engine, job_id)
    order = "".join(owner[job_id] for job_id in started)
    assert order[:9].count("b") == 6 and order[:9].count("m") == 3, order
    assert order[:3].count("m") == 1, order  # the member starts within the stated bound


async def test_a_model_flag_in_the_prompt_is_checked_like_the_model_field(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidRequest) as refused:
        await engine.submit(make_request("a fox --model nosuch"), make_requester())
    assert refused.value.field == "model"
    assert engine.jobs() == []
