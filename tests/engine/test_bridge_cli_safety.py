"""The thread bridge, the command line, and the optional safety checker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import (
    Engine,
    EngineBridge,
    Finished,
    InvalidRequest,
    Progress,
    Store,
    read_parameters,
)
from tests.conftest import wait_done

ROOT = Path(__file__).parents[2]


@pytest.fixture
def bridge(make_settings: Callable[..., Any]) -> Iterator[EngineBridge]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = make_settings()
    engine = Engine(settings, Store(settings.engine.data_dir))
    asyncio.run_coroutine_threadsafe(engine.start(), loop).result(60)
    yield EngineBridge(engine, loop)
    asyncio.run_coroutine_threadsafe(engine.close(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_bridge_submits_and_follows_from_another_thread(
    bridge: EngineBridge, make_request: Any, make_requester: Any
) -> None:
    job = bridge.submit(make_request(steps=6), make_requester())
    events = list(bridge.follow(job.id, timeout_s=60))
    assert isinstance(events[-1], Finished)
    assert any(isinstance(e, Progress) for e in events)
    assert bridge.job(job.id).state == "done"
    assert bridge.status().images_made == 1


def test_bridge_raises_the_engines_typed_errors(
    bridge: EngineBridge, make_request: Any, make_requester: Any
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        bridge.submit(make_request(width=7), make_requester())
    assert caught.value.field == "width"


def test_cli_generate_writes_a_png_whose_metadata_reads_back(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fox.png"
    result = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "a red fox", "--seed", "7", "--steps", "3",
         "--out", str(out), "--model", str(tiny_model_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parameters = read_parameters(out.read_bytes())
    assert parameters is not None
    assert (parameters.prompt, parameters.seed, parameters.steps) == ("a red fox", 7, 3)


def test_cli_check_config_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[engine]\nmax_batch = 99\n")
    result = subprocess.run(
        [sys.executable, "-m", "engine", "check-config", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "engine.max_batch: expected an integer 0–16, got 99" in result.stderr


@pytest.fixture(scope="module")
def tiny_safety_checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP-vision safety checker built offline whose threshold flags every image."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    folder = tmp_path_factory.mktemp("checker")
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 100},
        vision_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image scores above its threshold
    checker.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(folder)
    return folder


async def test_safety_checker_verdict_is_stored_with_each_image(
    make_engine: Callable[..., Any],
    make_request: Any,
    make_requester: Any,
    tiny_safety_checker: Path,
) -> None:
    engine = await make_engine(engine={"safety_checker": str(tiny_safety_checker)})
    event = await wait_done(engine, (await engine.submit(make_request(), make_requester())).id)
    assert isinstance(event, Finished)
    assert event.images[0].is_flagged
    assert engine.store.image(event.images[0].id).is_flagged  # type: ignore[union-attr]
