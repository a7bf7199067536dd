"""The tiny inpainting model: its files, loading as SD 2's inpainting weights do, and running."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine.errors import GenerationFailed
from engine.models import ModelSpec
from engine.pipeline import Pipeline
from engine.worker import Batch, BatchItem

WIDTH_PX, HEIGHT_PX = 64, 32


@pytest.fixture
def make_pipeline(
    make_settings: Callable[..., Any],
) -> Iterator[Callable[[Path, str], Pipeline]]:
    """Return a factory of loaded CPU pipelines; all are closed after the test."""
    settings = make_settings()
    pipelines: list[Pipeline] = []

    def make(folder: Path, kind: str) -> Pipeline:
        spec = ModelSpec(name=folder.name, path=str(folder), kind=kind)
        pipeline = Pipeline(spec, settings.engine, settings.data_path, "cpu")
        pipeline.load()
        pipelines.append(pipeline)
        return pipeline

    yield make
    for pipeline in pipelines:
        pipeline.close()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_batch(kind: str, seeds: tuple[int, ...] = (7,)) -> Batch:
    """Return a 2-step batch; inpaint kinds carry an init image and a mask (white where new)."""
    init_png = mask_png = None
    if kind in ("inpaint", "outpaint"):
        init_png = png(Image.new("RGB", (WIDTH_PX, HEIGHT_PX), (200, 120, 40)))
        mask = Image.new("L", (WIDTH_PX, HEIGHT_PX), 0)
        mask.paste(255, (WIDTH_PX // 2, 0, WIDTH_PX, HEIGHT_PX))
        mask_png = png(mask)
    item = BatchItem("job-1", "a red fox", "", seeds, init_png=init_png, mask_png=mask_png)
    return Batch("batch-1", "tiny", kind, WIDTH_PX, HEIGHT_PX, 2, 5.0, "DPM++ 2M", (item,))


def run(pipeline: Pipeline, batch: Batch) -> list[list[Any]]:
    return pipeline.run(batch, lambda step, total, preview: None, lambda: False)


def test_built_folder_is_an_inpaint_pipeline_with_a_9_channel_unet(
    tiny_inpaint_model_dir: Path,
) -> None:
    index = json.loads((tiny_inpaint_model_dir / "model_index.json").read_text())
    unet = json.loads((tiny_inpaint_model_dir / "unet" / "config.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    assert unet["in_channels"] == 9


def test_pipeline_loads_the_inpaint_model_as_kind_inpaint(
    make_pipeline: Callable[[Path, str], Pipeline], tiny_inpaint_model_dir: Path
) -> None:
    pipeline = make_pipeline(tiny_inpaint_model_dir, "inpaint")
    assert pipeline.is_inpaint
    assert pipeline.facts.kind == "inpaint"


def test_outpaint_batch_returns_one_image_per_seed_at_batch_size(
    make_pipeline: Callable[[Path, str], Pipeline], tiny_inpaint_model_dir: Path
) -> None:
    pipeline = make_pipeline(tiny_inpaint_model_dir, "inpaint")
    [images] = run(pipeline, make_batch("outpaint", seeds=(1, 2)))
    assert [image.seed for image in images] == [1, 2]
    assert all((image.width, image.height) == (WIDTH_PX, HEIGHT_PX) for image in images)
    assert all(len(image.data) == WIDTH_PX * HEIGHT_PX * 3 for image in images)


def test_txt2img_batch_on_the_inpaint_model_fails_only_inpaints(
    make_pipeline: Callable[[Path, str], Pipeline], tiny_inpaint_model_dir: Path
) -> None:
    pipeline = make_pipeline(tiny_inpaint_model_dir, "inpaint")
    with pytest.raises(GenerationFailed, match="only inpaints"):
        run(pipeline, make_batch("txt2img"))


def test_inpaint_batch_on_the_txt2img_model_fails_not_an_inpainting_model(
    make_pipeline: Callable[[Path, str], Pipeline], tiny_model_dir: Path
) -> None:
    pipeline = make_pipeline(tiny_model_dir, "txt2img")
    with pytest.raises(GenerationFailed, match="is not an inpainting model"):
        run(pipeline, make_batch("inpaint"))


@pytest.mark.parametrize("kind", ["txt2img", "outpaint"])
def test_the_float32_vae_retry_runs_at_half_precision(
    make_settings: Callable[..., Any],
    tiny_model_dir: Path,
    tiny_inpaint_model_dir: Path,
    kind: str,
) -> None:
    """The NaN/black retry upcasts only the VAE: its inputs must follow (bfloat16 on CPU)."""
    settings = make_settings(engine={"dtype": "bfloat16"})
    folder, model_kind = (
        (tiny_model_dir, "txt2img") if kind == "txt2img" else (tiny_inpaint_model_dir, "inpaint")
    )
    spec = ModelSpec(name=folder.name, path=str(folder), kind=model_kind)
    pipeline = Pipeline(spec, settings.engine, settings.data_path, "cpu")
    pipeline.load()
    try:
        arrays = pipeline._call(make_batch(kind), lambda *_: None, lambda: False, upcast=True)
        assert arrays.shape == (1, HEIGHT_PX, WIDTH_PX, 3)
        assert pipeline.diffusers.vae.dtype != torch.float32  # put back after the retry
    finally:
        pipeline.close()
