"""Shared fixtures: a tiny SD-2-shaped model built offline, settings, engines, requests."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import (
    Engine,
    GenerationRequest,
    ModelRegistry,
    Requester,
    Settings,
    Store,
    local_workers,
)
from engine.config import from_mapping
from tests.fakes.worker import GatedWorker

# Two threads on a busy 2-core machine made the tiny model 5–250× slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny random SD-2-shaped pipeline once per test session."""
    from engine import tinymodel

    return tinymodel.build(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_inpaint_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny random SD-2-shaped inpainting pipeline (9-channel UNet) once per session."""
    from engine import tinymodel

    return tinymodel.build_inpaint(tmp_path_factory.mktemp("models") / "tiny-inpaint")


@pytest.fixture(scope="session")
def tiny_lora(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a LoRA (peft, random lora_B) for the tiny UNet once per session."""
    from engine import tinymodel

    return tinymodel.build_lora(
        tiny_model_dir, tmp_path_factory.mktemp("loras") / "fox.safetensors"
    )


@pytest.fixture(scope="session")
def wide_lora(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a LoRA for a wider UNet than the tiny one: the wrong shapes for it."""
    from engine import tinymodel

    path = tmp_path_factory.mktemp("loras") / "wide.safetensors"
    return tinymodel.build_lora(tiny_model_dir, path, block_out_channels=(64, 128))


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Return a factory: sections as keyword dicts override the test defaults."""

    def make(env: dict[str, str] | None = None, **sections: dict[str, Any]) -> Settings:
        raw: dict[str, dict[str, Any]] = {
            "engine": {"model": str(tiny_model_dir), "data_dir": str(tmp_path / "data")},
            "limits": {"max_per_user": 50, "default_steps": 4},
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return from_mapping(raw, env or {})

    return make


@pytest.fixture
def make_request() -> Callable[..., GenerationRequest]:
    """Return a factory of small, fast requests."""

    def make(prompt: str = "a red fox", **overrides: Any) -> GenerationRequest:
        values: dict[str, Any] = {"steps": 4, "seed": 7}
        values.update(overrides)
        return GenerationRequest(prompt=prompt, **values)

    return make


@pytest.fixture
def make_requester() -> Callable[..., Requester]:
    """Return a factory of requesters (web user 'alice' by default)."""

    def make(user_id: str = "alice", **overrides: Any) -> Requester:
        values: dict[str, Any] = {"source": "web", "name": user_id}
        values.update(overrides)
        return Requester(user_id=user_id, **values)

    return make


@pytest.fixture
async def make_engine(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    """Return an async factory of started engines; all are closed after the test."""
    engines: list[Engine] = []

    async def make(
        settings: Settings | None = None, gated: bool = False, **sections: dict[str, Any]
    ) -> Engine:
        settings = settings or make_settings(**sections)
        workers = gated_workers(settings) if gated else None
        engine = Engine(settings, Store(settings.engine.data_dir), workers=workers)
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await asyncio.wait_for(engine.close(grace_s=5), 60)


def gated_workers(
    settings: Settings, wrapper: Callable[[Any], GatedWorker] = GatedWorker
) -> list[GatedWorker]:
    """Return the engine's own local workers, each wrapped (behind a gate, by default)."""
    registry = ModelRegistry.from_settings(settings)
    return [wrapper(w) for w in local_workers(settings.engine, registry, settings.data_path)]


def gate(engine: Engine, index: int = 0) -> GatedWorker:
    """Return an engine's gated worker (made with `make_engine(gated=True)`)."""
    worker = engine.workers[index]
    assert isinstance(worker, GatedWorker), "make the engine with gated=True"
    return worker


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 5, every_s: float = 0.02
) -> Any:
    """Poll until `predicate` returns something truthy; return it (TimeoutError after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout_s} s")
        await asyncio.sleep(every_s)


async def wait_done(engine: Engine, job_id: str, timeout_s: float = 60) -> Any:
    """Follow a job to its end; return the last event."""

    async def follow() -> Any:
        last = None
        async for event in engine.events(job_id):
            last = event
        return last

    return await asyncio.wait_for(follow(), timeout_s)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
