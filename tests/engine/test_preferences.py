"""Your settings: a person's own defaults, stored in SQLite, applied at admission under what
they typed and over the server's defaults; re-rolls never apply them twice."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    Delivery,
    Engine,
    Finished,
    GenerationRequest,
    InvalidRequest,
    Preferences,
    Requester,
    Store,
    aspect_size,
)
from engine.request import fit_size
from tests.conftest import wait_done

ALICE = Requester(source="discord", user_id="1", name="alice", guild_id="9")
PATRON = Requester(source="discord", user_id="2", name="bob", guild_id="9", role_ids=("77",))
STYLES = {"oil": {"prompt": "{prompt}, oil painting"}, "ink": {"prompt": "ink of {prompt}"}}
LIMITS = {
    "max_per_user": 50,
    "default_steps": 4,
    "max_steps": 20,
    "roles": {"77": {"max_steps": 50}},
}


async def started(make_engine: Any, **sections: Any) -> Engine:
    return await make_engine(limits=LIMITS, styles=STYLES, **sections)


def sixteen_by_nine(engine: Engine) -> tuple[int, int]:
    native = engine.registry.facts(engine.registry.default_name).native_px
    return fit_size(*aspect_size("16:9", native), engine.settings.limits)


async def test_an_aspect_default_makes_a_plain_request_16_9_and_says_so(
    make_engine: Any,
) -> None:
    engine = await started(make_engine)
    await engine.set_preferences(ALICE, Preferences(aspect="16:9"))
    job = await engine.submit(GenerationRequest(prompt="a fox", seed=1), ALICE)
    assert (job.request.width, job.request.height) == sixteen_by_nine(engine)
    assert job.request.applied == ("aspect 16:9",)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    image = event.images[0]
    assert (image.width, image.height) == sixteen_by_nine(engine)
    assert image.width > image.height


async def test_an_option_or_an_inline_flag_beats_the_default(make_engine: Any) -> None:
    engine = await started(make_engine)
    await engine.set_preferences(ALICE, Preferences(aspect="16:9", steps=6, style="oil"))
    typed = await engine.submit(GenerationRequest(prompt="a fox --ar 1:1", steps=3), ALICE)
    assert typed.request.width == typed.request.height
    assert typed.request.steps == 3
    assert typed.request.applied == ("style oil",)
    assert typed.request.prompt == "a fox, oil painting"
    sized = await engine.submit(GenerationRequest(prompt="a fox --style ink", width=64), ALICE)
    assert sized.request.width == 64 and sized.request.style == "ink"
    assert sized.request.applied == ("steps 6",)


async def test_someone_elses_defaults_are_not_mine(make_engine: Any) -> None:
    engine = await started(make_engine)
    await engine.set_preferences(ALICE, Preferences(aspect="16:9", negative_prompt="blurry"))
    job = await engine.submit(GenerationRequest(prompt="a fox"), PATRON)
    assert job.request.width == job.request.height
    assert job.request.negative_prompt == "" and job.request.applied == ()


async def test_steps_above_my_limit_are_saved_and_clamped_at_use_with_a_note(
    make_engine: Any,
) -> None:
    engine = await started(make_engine)
    saved = await engine.set_preferences(ALICE, Preferences(steps=40))
    assert saved.steps == 40  # a patron role may use 40 here, so it is kept
    job = await engine.submit(GenerationRequest(prompt="a fox"), ALICE)
    assert job.request.steps == 20
    assert job.request.applied == ("steps 20 (your 40 is over the limit here)",)
    await engine.set_preferences(PATRON, Preferences(steps=40))
    theirs = await engine.submit(GenerationRequest(prompt="a fox"), PATRON)
    assert theirs.request.steps == 40 and theirs.request.applied == ("steps 40",)


@pytest.mark.parametrize(
    ("preferences", "field", "words"),
    [
        (Preferences(aspect="5:1"), "aspect", "16:9"),
        (Preferences(steps=51), "steps", "1–50"),
        (Preferences(steps=0), "steps", "1–50"),
        (Preferences(guidance=31.0), "guidance", "0–30"),
        (Preferences(guidance=float("nan")), "guidance", "0–30"),
        (Preferences(model="tinny"), "model", "did you mean"),
        (Preferences(style="oli"), "style", "did you mean oil"),
        (Preferences(negative_prompt="x" * 1001), "negative_prompt", "at most 1000"),
    ],
)
async def test_a_default_no_limit_allows_is_refused_naming_the_field_and_range(
    make_engine: Any, preferences: Preferences, field: str, words: str
) -> None:
    engine = await started(make_engine)
    with pytest.raises(InvalidRequest) as caught:
        await engine.set_preferences(ALICE, preferences)
    assert caught.value.field == field and words in caught.value.reason
    assert engine.preferences(ALICE) == Preferences()
    assert engine.store.preferences() == {}


async def test_defaults_survive_a_restart_and_reset_restores_the_servers(
    make_engine: Any, make_settings: Any
) -> None:
    settings = make_settings(limits=LIMITS, styles=STYLES)
    engine = await make_engine(settings)
    mine = Preferences(
        aspect="9:16", guidance=6.5, negative_prompt="blurry", style="OIL", delivery=Delivery.DM
    )
    saved = await engine.set_preferences(ALICE, mine)
    assert saved.style == "oil"  # the configured spelling
    await engine.close(grace_s=5)
    again = Engine(settings, Store(settings.engine.data_dir))
    await again.start()
    try:
        assert again.preferences(ALICE) == saved
        job = await again.submit(GenerationRequest(prompt="a fox"), ALICE)
        assert job.request.height > job.request.width
        assert (job.request.guidance, job.request.negative_prompt) == (6.5, "blurry")
        await again.set_preferences(ALICE, Preferences())
        assert again.preferences(ALICE) == Preferences()
        assert again.store.preferences() == {}
    finally:
        await again.close(grace_s=5)


async def test_a_reroll_keeps_what_the_job_was_made_with(make_engine: Any) -> None:
    engine = await started(make_engine)
    first = await engine.submit(GenerationRequest(prompt="a fox", seed=3), ALICE)
    await wait_done(engine, first.id)
    await engine.set_preferences(ALICE, Preferences(negative_prompt="blurry", style="oil"))
    again = await engine.submit(await engine.reroll_request(first.id), ALICE)
    assert again.request.negative_prompt == "" and again.request.style is None
    assert again.request.prompt == "a fox" and again.request.applied == ()


async def test_a_default_model_or_style_no_longer_offered_is_skipped_with_a_note(
    make_engine: Any,
) -> None:
    engine = await started(make_engine)
    await engine.set_preferences(ALICE, Preferences(style="oil"))
    engine.reload(engine.settings.__class__(**{**engine.settings.__dict__, "styles": {}}))
    job = await engine.submit(GenerationRequest(prompt="a fox"), ALICE)
    assert job.request.style is None
    assert job.request.applied == ("style oil skipped (not offered now)",)


def test_an_unreadable_stored_row_falls_back_to_the_servers_defaults() -> None:
    stored = Preferences.from_dict({"delivery": "pigeon", "remix": 1, "colour": "red"})
    assert stored.delivery == Delivery.CHANNEL and stored.remix is True
