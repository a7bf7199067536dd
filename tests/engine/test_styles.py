"""Styles: `[styles.<name>]` in config, `--style` and the `style` field, applied at admission,
recorded on the image and in its PNG parameters."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import (
    ConfigError,
    Finished,
    GenerationRequest,
    InvalidRequest,
    Settings,
    load_settings,
    read_parameters,
)
from engine.config import LimitSettings, StyleSettings, from_mapping
from engine.request import resolve
from tests.conftest import wait_done

LIMITS = LimitSettings()
STYLES = {
    "oil": StyleSettings(
        prompt="{prompt}, oil painting, impasto",
        negative_prompt="photo",
        label="Oil painting",
        steps=40,
        guidance=9.0,
        width=512,
        height=384,
        scheduler="Euler a",
    ),
    "ink": StyleSettings(prompt="ink drawing of {prompt}"),
    "noir": StyleSettings(prompt="{prompt}, film noir"),
}


def run(prompt: str = "a fox", **fields: Any) -> GenerationRequest:
    request = GenerationRequest(prompt=prompt, **fields)
    return resolve(request, LIMITS, 768, "DPM++ 2M", styles=STYLES)


# -- config --------------------------------------------------------------------------------


def test_a_style_table_is_parsed_with_its_defaults() -> None:
    raw = {"styles": {"oil": {"prompt": "{prompt}, oil", "label": "Oil", "steps": 30}}}
    style = from_mapping(raw, {}).styles["oil"]
    assert (style.prompt, style.label, style.steps) == ("{prompt}, oil", "Oil", 30)
    assert style.width is None


@pytest.mark.parametrize("template", ["oil painting", "{prompt} and {prompt}", "{ prompt }"])
def test_a_template_without_prompt_once_is_refused_naming_the_key(template: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"styles": {"oil": {"prompt": template}}}, {})
    assert caught.value.key == "styles.oil.prompt"


def test_a_style_with_an_unknown_key_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"styles": {"oil": {"prompt": "{prompt}", "lora": "x"}}}, {})
    assert caught.value.key == "styles.oil.lora"


def test_a_style_default_out_of_range_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"styles": {"oil": {"steps": 0}}}, {})
    assert caught.value.key == "styles.oil.steps"


def test_the_example_configs_style_is_valid_once_uncommented(tmp_path: Path) -> None:
    example = (Path(__file__).parents[2] / "config.example.toml").read_text()
    start = example.index("# [styles.oil]")
    lines = example[start:].split("\n\n", 1)[0].splitlines()
    table = [line[2:] for line in lines if re.match(r"# (\[styles\.|\w+ = )", line)]
    config = tmp_path / "config.toml"
    config.write_text("\n".join(table) + "\n")
    style = load_settings(config).styles["oil"]
    assert "{prompt}" in style.prompt and style.label


# -- requests ------------------------------------------------------------------------------


def test_the_template_wraps_the_prompt_and_the_name_is_kept() -> None:
    request = run("a fox", style="oil")
    assert request.prompt == "a fox, oil painting, impasto"
    assert request.style == "oil"


def test_the_styles_negative_prompt_is_appended_to_the_users() -> None:
    assert run("a fox", style="oil", negative_prompt="blur").negative_prompt == "blur, photo"
    assert run("a fox", style="oil").negative_prompt == "photo"


def test_the_style_flag_picks_a_style_after_the_other_flags_are_read() -> None:
    request = run("a fox --style ink --no cars")
    assert request.prompt == "ink drawing of a fox"
    assert request.style == "ink"
    assert request.negative_prompt == "cars"


def test_the_style_flag_beats_the_style_field() -> None:
    assert run("a fox --style noir", style="ink").style == "noir"


def test_a_style_name_matches_whatever_its_case() -> None:
    assert run("a fox", style="OIL").style == "oil"


def test_style_defaults_apply_under_explicit_values() -> None:
    styled = run("a fox", style="oil")
    assert (styled.steps, styled.guidance, styled.scheduler) == (40, 9.0, "Euler a")
    assert (styled.width, styled.height) == (512, 384)
    own = run("a fox --steps 12 --ar 1:1", style="oil", guidance=3.0, scheduler="DDIM")
    assert (own.steps, own.guidance, own.scheduler) == (12, 3.0, "DDIM")
    assert own.width == own.height


def test_style_defaults_beat_the_models() -> None:
    from engine.models import ModelDefaults

    model = ModelDefaults(width=640, height=640, steps=20, guidance=5.0, scheduler="DDIM")
    request = GenerationRequest(prompt="a fox", style="oil")
    styled = resolve(request, LIMITS, 768, "DPM++ 2M", model, styles=STYLES)
    assert (styled.steps, styled.guidance, styled.width, styled.scheduler) == (
        40,
        9.0,
        512,
        "Euler a",
    )
    plain = resolve(GenerationRequest(prompt="a fox", style="ink"), LIMITS, 768, "x", model, STYLES)
    assert (plain.steps, plain.width, plain.scheduler) == (20, 640, "DDIM")


def test_an_unknown_style_offers_the_closest_names() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox --style oli")
    assert caught.value.field == "style"
    assert "unknown style 'oli'" in caught.value.reason and "oil" in caught.value.reason


def test_an_unknown_style_with_no_close_name_lists_them_all() -> None:
    with pytest.raises(InvalidRequest) as caught:
        run("a fox", style="watercolour")
    assert "known: oil, ink, noir" in caught.value.reason


def test_resolving_a_styled_request_again_does_not_wrap_it_twice() -> None:
    once = run("a fox", style="oil", negative_prompt="blur")
    again = resolve(
        GenerationRequest.from_dict({**once.to_dict(), "seed": None}),
        LIMITS,
        768,
        "DPM++ 2M",
        styles=STYLES,
    )
    assert (again.prompt, again.negative_prompt) == (once.prompt, once.negative_prompt)


def test_an_empty_style_is_no_style() -> None:
    request = run("a fox", style="  ")
    assert (request.prompt, request.style) == ("a fox", None)


def test_the_style_is_stored_with_the_job() -> None:
    data = run("a fox", style="oil").to_dict()
    assert data["style"] == "oil"
    assert GenerationRequest.from_dict(data).style == "oil"


# -- the engine ----------------------------------------------------------------------------


StyledEngine = Callable[..., Any]


async def test_a_styled_image_records_the_style_and_the_png_says_it(
    make_engine: StyledEngine, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(styles={"oil": {"prompt": "{prompt}, oil painting"}})
    job = await engine.submit(make_request("a fox --style oil"), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    [image] = event.images
    assert (image.style, image.prompt) == ("oil", "a fox, oil painting")
    params = read_parameters(engine.store.image_path(image.file_name).read_bytes())
    assert params is not None
    assert params.prompt == "a fox, oil painting"
    assert dict(params.extra)["Style"] == "oil"


async def test_an_image_without_a_style_records_none(
    make_engine: StyledEngine, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    event = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    assert event.images[0].style == ""
    params = read_parameters(engine.store.image_path(event.images[0].file_name).read_bytes())
    assert params is not None and "Style" not in dict(params.extra)


async def test_a_reload_brings_new_styles_to_admission(
    make_engine: StyledEngine,
    make_settings: Callable[..., Settings],
    make_request: Any,
    make_requester: Any,
) -> None:
    engine = await make_engine()
    with pytest.raises(InvalidRequest):
        engine.admit(make_request("a fox --style ink"), make_requester())
    engine.reload(make_settings(styles={"ink": {"prompt": "ink drawing of {prompt}"}}))
    job = await engine.admit(make_request("a fox --style ink"), make_requester())
    assert job.request.prompt == "ink drawing of a fox"
    assert [style.name for style in engine.status().styles] == ["ink"]


async def test_a_reroll_of_a_styled_job_keeps_the_style_without_wrapping_twice(
    make_engine: StyledEngine, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(styles={"oil": {"prompt": "{prompt}, oil painting"}})
    first = await engine.submit(make_request("a fox", style="oil"), make_requester())
    await wait_done(engine, first.id)
    again = await engine.submit(await engine.reroll_request(first.id), make_requester())
    assert (again.request.prompt, again.request.style) == ("a fox, oil painting", "oil")
    await wait_done(engine, again.id)
