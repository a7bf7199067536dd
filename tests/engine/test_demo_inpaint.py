"""The demo model's inpainting twin: SD 2's inpainting layout, shipped beside the txt2img model
(sharing its VAE, text encoder and tokenizer), registered in the offline default, and measured:
it fills a hidden shape as the caption says and a zoom-out border with the background."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.demo import sample_caption
from engine.demo.dataset import draw
from engine.demo.evaluate import GUIDANCE, MODEL_DIR, STEPS
from engine.demo.inpaint import INPAINT_DIR, SHARED, random_mask, shape_box, twin_bytes

# From `python -m engine.demo eval --kind inpaint --n 200` on the shipped twin (see README),
# lowered by about 2.5 binomial standard deviations for this test's n = 24 (and 1.5 levels of
# 255 for the kept area's change). Never lower them to let a change pass.
SEEN_MIN = {"colour": 0.9, "background": 0.95, "shape": 0.85, "position": 0.9}
# (held-out shape measured 0.935; the twin before, on the seen-pairs-only VAE: 0.715)
HELD_OUT_MIN = {"colour": 0.9, "background": 0.95, "shape": 0.8, "position": 0.9}
ZOOM_BACKGROUND_MIN = 0.9
KEPT_MAD_PASTED_MAX = 1.5  # of 255, on the kept pixels after the engine puts them back
EVAL_N = 24


@pytest.fixture
def one_thread() -> Any:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_twin_is_sd2_inpainting_shaped_and_links_the_shared_parts() -> None:
    index = json.loads((INPAINT_DIR / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInpaintPipeline"
    unet = json.loads((INPAINT_DIR / "unet" / "config.json").read_text())
    assert unet["in_channels"] == 9 and unet["out_channels"] == 4
    for name in SHARED:
        link = INPAINT_DIR / name
        assert link.is_symlink() and os.readlink(link) == f"../{MODEL_DIR.name}/{name}"
        assert link.resolve() == (MODEL_DIR / name).resolve()
    files = [p for p in INPAINT_DIR.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    assert twin_bytes() <= 13 * 2**20  # its UNet: the rest is the txt2img model's
    defaults = json.loads((INPAINT_DIR / "imagine.json").read_text())["defaults"]
    assert (defaults["steps"], defaults["guidance"]) == (STEPS, GUIDANCE)


def test_the_offline_default_registers_both_demo_models(tmp_path: Path) -> None:
    from engine.config import from_mapping
    from engine.models import ModelRegistry

    settings = from_mapping({"engine": {"data_dir": str(tmp_path)}}, {})
    registry = ModelRegistry.from_settings(settings)
    kinds = {spec.name: spec.kind for spec in registry.specs()}
    assert kinds == {"imagine-demo": "txt2img", "imagine-demo-inpaint": "inpaint"}


def test_the_twin_loads_through_the_engines_pipeline_code(make_settings: Any) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    from engine.models import BUILTIN_DEMO_INPAINT, ModelSpec
    from engine.pipeline import Pipeline

    settings = make_settings()
    spec = ModelSpec("imagine-demo-inpaint", BUILTIN_DEMO_INPAINT, "inpaint")
    pipeline = Pipeline(spec, settings.engine, settings.data_path, "cpu")
    try:
        facts = pipeline.load()
        assert isinstance(pipeline.diffusers, StableDiffusionInpaintPipeline)
        assert facts.kind == "inpaint" and facts.native_px == 32 and facts.is_demo
    finally:
        pipeline.close()


@pytest.mark.parametrize("kind", ["shape", "box", "strokes", "zoom", "pan"])
def test_training_masks_are_binary_and_cover_what_they_say(kind: str) -> None:
    rng = random.Random(3)
    for _ in range(20):
        caption = sample_caption(rng)
        mask = random_mask(rng, caption, 32, kind)
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0.0, 1.0}
        assert 0 < mask.mean() < 1
        if kind == "shape":  # the box hides the whole drawn shape, jitter included
            scene = np.asarray(draw(caption, 32, rng)).astype(int)
            from engine.demo.captions import COLOURS

            background = np.array(COLOURS[caption.background])
            shape_pixels = np.abs(scene - background).sum(axis=2) > 60
            assert mask[shape_pixels].min() == 1.0, shape_box(caption, 32)
        if kind == "zoom":
            assert mask[16, 16] == 0 and mask[0, 0] == 1


def test_the_shipped_twin_fills_hidden_shapes_and_zoom_borders(one_thread: Any) -> None:
    from engine.demo.inpaint import evaluate_inpaint, load_inpaint_pipeline

    result = evaluate_inpaint(load_inpaint_pipeline(INPAINT_DIR), n=EVAL_N, seed=77)
    for name, low in SEEN_MIN.items():
        assert result["seen"][name] >= low, (name, result["seen"])
    for name, low in HELD_OUT_MIN.items():
        assert result["held_out"][name] >= low, (name, result["held_out"])
    assert result["zoom_2"]["new_area_background"] >= ZOOM_BACKGROUND_MIN, result["zoom_2"]
    for group in ("seen", "held_out", "zoom_2", "pan_right"):
        assert result[group]["kept_mad_pasted"] <= KEPT_MAD_PASTED_MAX, (group, result[group])
