"""Requests: inline flags, normalisation, defaults and every range check (FAULTS 1, 2, 5, 6)."""

from __future__ import annotations

import math

import pytest

from engine import BudgetExceeded, GenerationRequest, InvalidRequest, aspect_size, normalise_text
from engine.config import LimitSettings
from engine.request import parse_flags, resolve

LIMITS = LimitSettings()


def run(prompt: str = "a fox", native: int = 768, **fields: object) -> GenerationRequest:
    return resolve(GenerationRequest(prompt=prompt, **fields), LIMITS, native, "DPM++ 2M")  # type: ignore[arg-type]


def test_defaults_take_the_models_native_size() -> None:
    assert (run(native=32).width, run(native=32).height) == (32, 32)
    assert (run(native=768).width, run(native=768).height) == (768, 768)


def test_seed_is_chosen_when_absent_and_kept_when_given() -> None:
    assert 0 <= (run().seed or 0) <= 2**32 - 1
    assert run(seed=5).seed == 5


def test_inline_flags_set_fields() -> None:
    request = run("a fox --ar 3:2 --seed 7 --no cars, trees --steps 30 --cfg 6.5")
    assert request.prompt == "a fox"
    assert (request.width, request.height) == (960, 640)
    assert request.seed == 7
    assert request.negative_prompt == "cars, trees"
    assert request.steps == 30
    assert request.guidance == 6.5


def test_no_flag_appends_to_the_negative_prompt() -> None:
    assert run("a fox --no cars", negative_prompt="blur").negative_prompt == "blur, cars"


def test_unknown_flag_is_named() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --bogus 3")
    assert caught.value.field == "prompt"
    assert "--bogus" in caught.value.reason


def test_flag_with_a_bad_value_names_its_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --seed lots")
    assert caught.value.field == "seed"


@pytest.mark.parametrize("aspect", ["1:1", "3:2", "2:3", "16:9", "9:16"])
def test_aspects_map_to_multiples_of_64_near_the_native_area(aspect: str) -> None:
    width, height = aspect_size(aspect, 768)
    assert width % 64 == 0 and height % 64 == 0
    assert 0.8 < width * height / 768**2 < 1.2


def test_bad_aspect_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="W:H"):
        aspect_size("wide", 768)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"width": 7}, "width", "32–1024"),
        ({"width": 0}, "width", "32–1024"),
        ({"height": -64}, "height", "32–1024"),
        ({"width": 10**9}, "width", "32–1024"),
        ({"width": 516}, "width", "multiple of 8"),
        ({"guidance": math.nan}, "guidance", "0–30"),
        ({"guidance": math.inf}, "guidance", "0–30"),
        ({"steps": 0}, "steps", "1–100"),
        ({"steps": 100_000}, "steps", "1–100"),
        ({"count": 1000}, "count", "1–4"),
        ({"seed": -1}, "seed", "0–4294967295"),
        ({"seed": 2**32}, "seed", "0–4294967295"),
        ({"scheduler": "PLMS"}, "scheduler", "DPM++ 2M"),
        ({"steps": "ten"}, "steps", "integer"),
    ],
)
def test_out_of_range_fields_name_the_field_and_range(
    fields: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        run(**fields)
    assert caught.value.field == field
    assert words in caught.value.reason


def test_a_10000_character_prompt_is_refused_with_the_cap() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("x" * 10_000)
    assert caught.value.field == "prompt"
    assert "1000" in caught.value.reason


@pytest.mark.parametrize("prompt", ["", "   ", "\x00\x01", "\u200b\u200d\u202e", "\t\n"])
def test_empty_after_normalising_is_refused(prompt: str) -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        run(prompt)


def test_normalising_strips_controls_and_folds_width() -> None:
    assert normalise_text("ａ\u202eｆｏｘ\x00 \u200b in\n\nsnow") == "afox in snow"


def test_budget_counts_pixels_steps_and_count() -> None:
    limits = LimitSettings(max_pixel_steps=512 * 512 * 20)
    with pytest.raises(BudgetExceeded) as caught:
        resolve(
            GenerationRequest("fox", width=512, height=512, steps=20, count=2), limits, 512, "Euler"
        )
    assert caught.value.budget == 512 * 512 * 20
    assert caught.value.cost == 512 * 512 * 40


def test_parse_flags_leaves_a_plain_prompt_alone() -> None:
    text, flags = parse_flags("a fox -- with dashes")
    assert text == "a fox -- with dashes"
    assert not flags.values


def test_request_round_trips_through_a_dict() -> None:
    request = run("a fox --seed 3")
    assert GenerationRequest.from_dict(request.to_dict()) == request


def test_a_default_or_aspect_size_is_fitted_into_the_limits() -> None:
    limits = LimitSettings(min_size_px=32, max_size_px=64)
    small = resolve(GenerationRequest("fox", aspect="9:16"), limits, 32, "Euler")
    assert (small.width, small.height) == (32, 48)  # 24×40 scaled to the 32 px floor
    big_min = LimitSettings(min_size_px=256)
    demo = resolve(GenerationRequest("fox"), big_min, 32, "Euler")  # a 32 px model, 256 px floor
    assert (demo.width, demo.height) == (256, 256)
    with pytest.raises(InvalidRequest, match="width"):  # typed by a person: refused, not changed
        resolve(GenerationRequest("fox", width=24, height=64), limits, 32, "Euler")


def test_full_width_dashes_are_words_not_flags() -> None:
    request = run("a fox －－ｘ in snow")
    assert request.prompt == "a fox --x in snow"
    assert run("a fox --seed 7").seed == 7
