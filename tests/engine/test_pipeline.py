"""Pipeline details: token truncation, previews, reload, and the CUDA fp16 path (marked gpu)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch

from engine import Finished
from engine.pipeline import latent_preview
from tests.conftest import wait_done


async def test_prompt_past_77_tokens_runs_with_a_logged_note(
    make_engine: Callable[..., Any],
    make_request: Any,
    make_requester: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await make_engine()
    long_prompt = " ".join(["fox"] * 150)
    with caplog.at_level(logging.INFO, logger="engine.pipeline"):
        job = await engine.submit(make_request(long_prompt), make_requester())
        assert isinstance(await wait_done(engine, job.id), Finished)
    assert any("CLIP reads the first 77" in record.message for record in caplog.records)


def test_latent_preview_is_a_small_rgb_image() -> None:
    image = latent_preview(torch.randn(4, 12, 16))
    assert image.mode == "RGB" and image.size == (16, 12)


async def test_reload_applies_new_limits_but_keeps_model_settings(
    make_engine: Callable[..., Any], make_settings: Callable[..., Any]
) -> None:
    engine = await make_engine()
    new = make_settings(limits={"max_steps": 10}, engine={"max_batch": 4})
    engine.reload(new)
    assert engine.settings.limits.max_steps == 10
    assert engine.settings.engine.max_batch == 0


@pytest.mark.gpu
async def test_cuda_float16_gives_finite_images(
    make_engine: Callable[..., Any],
    make_settings: Callable[..., Any],
    make_request: Any,
    make_requester: Any,
) -> None:
    settings = make_settings(engine={"device": "cuda", "dtype": "float16"})
    engine = await make_engine(dataclasses.replace(settings))
    assert engine.status().dtype == "float16"
    event = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    assert isinstance(event, Finished)
