"""Engine faults from FAULTS.md 11–19: each fails one job clearly and the next job succeeds."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import (
    Engine,
    Failed,
    Finished,
    LocalWorker,
    ModelUnavailable,
    Progress,
    Store,
    StoreError,
)
from engine.config import from_mapping
from tests.conftest import wait_done, wait_until

EngineFactory = Callable[..., Any]
ROOT = Path(__file__).parents[2]


@dataclass
class Rig:
    """Engines, jobs and fault patches for one test."""

    make_engine: EngineFactory
    make_request: Callable[..., Any]
    make_requester: Callable[..., Any]
    monkeypatch: pytest.MonkeyPatch

    async def engine(self, **sections: dict[str, Any]) -> Engine:
        return await self.make_engine(**sections)  # type: ignore[no-any-return]

    async def submit(self, engine: Engine, **request: Any) -> Any:
        return await engine.submit(self.make_request(**request), self.make_requester())

    async def assert_next_job_succeeds(self, engine: Engine) -> None:
        job = await self.submit(engine)
        assert isinstance(await wait_done(engine, job.id), Finished)

    def patch_unet(self, engine: Engine, fault: Callable[..., Any]) -> None:
        unet = diffusers_of(engine).unet
        original = unet.forward
        self.monkeypatch.setattr(unet, "forward", lambda *a, **k: fault(original, *a, **k))


def pipeline_of(engine: Engine) -> Any:
    """Return the default model's pipeline on the engine's (only) local worker."""
    worker = engine.workers[0]
    assert isinstance(worker, LocalWorker)
    return worker.pipeline(engine.registry.default_name)


def diffusers_of(engine: Engine) -> Any:
    """Return the diffusers pipeline behind it (to inject faults into the UNet or VAE)."""
    return pipeline_of(engine).diffusers


def worker_is_free(engine: Engine) -> bool:
    """Return whether the worker runs nothing (the old GPU lock is never left held)."""
    return not engine.status().workers[0].is_busy


@pytest.fixture
def rig(
    make_engine: EngineFactory,
    make_request: Callable[..., Any],
    make_requester: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Rig:
    return Rig(make_engine, make_request, make_requester, monkeypatch)


async def test_exception_mid_generation_fails_that_job_and_the_next_succeeds(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    calls = 0

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("cuDNN exploded")
        return original(*args, **kwargs)

    rig.patch_unet(engine, fault)
    bad = await rig.submit(engine)
    event = await wait_done(engine, bad.id)
    assert isinstance(event, Failed)
    assert "RuntimeError" in event.reason
    assert await wait_until(lambda: worker_is_free(engine))
    await rig.assert_next_job_succeeds(engine)
    assert engine.job(bad.id).state == "failed"


async def test_out_of_memory_retries_once_with_slicing_and_tiling(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    raised = []

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    rig.patch_unet(engine, fault)
    job = await rig.submit(engine)
    assert isinstance(await wait_done(engine, job.id), Finished)
    assert pipeline_of(engine).is_memory_saving


async def test_out_of_memory_twice_fails_clearly_and_the_queue_keeps_running(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    is_broken = True

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if is_broken:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(*args, **kwargs)

    rig.patch_unet(engine, fault)
    job = await rig.submit(engine)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "out of memory" in event.reason
    is_broken = False
    await rig.assert_next_job_succeeds(engine)
    assert engine.status().failures.get("out_of_memory") == 1


def patch_vae_decode(engine: Engine, monkeypatch: pytest.MonkeyPatch, bad_calls: int) -> list[int]:
    vae = diffusers_of(engine).vae
    original = vae.decode
    calls: list[int] = []

    def decode(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        output = original(latents, *args, **kwargs)
        if len(calls) <= bad_calls:
            sample = output[0] if isinstance(output, tuple) else output.sample
            sample.fill_(float("nan"))
        return output

    monkeypatch.setattr(vae, "decode", decode)
    return calls


async def test_nan_image_is_retried_with_upcast_then_published(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    calls = patch_vae_decode(engine, rig.monkeypatch, bad_calls=1)
    job = await rig.submit(engine)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    assert len(calls) == 2


async def test_nan_image_twice_is_never_published_as_success(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    patch_vae_decode(engine, rig.monkeypatch, bad_calls=2)
    job = await rig.submit(engine)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "NaN" in event.reason
    assert engine.store.images_of_job(job.id) == []


async def test_a_hanging_step_is_interrupted_by_the_watchdog(
    rig: Rig,
) -> None:
    engine = await rig.engine(engine={"job_timeout_s": 1, "hang_grace_s": 10})
    hung = []

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not hung:
            hung.append(True)
            time.sleep(2)
        return original(*args, **kwargs)

    rig.patch_unet(engine, fault)
    job = await rig.submit(engine, steps=10)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "timed out after 1 s" in event.reason
    assert await wait_until(lambda: worker_is_free(engine))
    await rig.assert_next_job_succeeds(engine)


async def test_a_stuck_worker_thread_is_replaced(
    rig: Rig,
) -> None:
    engine = await rig.engine(engine={"job_timeout_s": 1, "hang_grace_s": 0})
    release = threading.Event()

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("imagine-gpu") and not release.is_set():
            release.wait(5)
        return original(*args, **kwargs)

    rig.patch_unet(engine, fault)
    job = await rig.submit(engine)
    assert isinstance(await wait_done(engine, job.id), Failed)
    assert "a worker thread hung and was replaced" in engine.status().degraded
    assert engine.status().degraded
    release.set()
    await rig.assert_next_job_succeeds(engine)


async def test_close_requeues_the_running_job_for_the_next_start(
    make_settings: Callable[..., Any], rig: Rig
) -> None:
    settings = make_settings()
    engine = Engine(settings, Store(settings.engine.data_dir))
    await engine.start()
    job = await rig.submit(engine, steps=100)
    async for event in engine.events(job.id):
        if isinstance(event, Progress):
            break
    await engine.close(grace_s=0)
    assert Store(settings.engine.data_dir).job(job.id).state == "running"  # type: ignore[union-attr]
    again = Engine(settings, Store(settings.engine.data_dir))
    await again.start()
    try:
        assert again.job(job.id).state in ("queued", "running")
        monkey_steps = again.job(job.id).request.steps
        assert monkey_steps == 100
        await again.cancel(job.id, by=rig.make_requester())
    finally:
        await again.close()


async def test_unreadable_images_folder_fails_the_job_and_reports_degraded(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    images = engine.store.images_dir
    images.rename(images.with_name("images.away"))
    images.write_text("not a folder")  # writes now fail like on a broken disk
    job = await rig.submit(engine, count=2)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "cannot write image" in event.reason
    assert any("cannot write image" in d for d in engine.status().degraded)
    images.unlink()
    images.with_name("images.away").rename(images)
    assert engine.store.images_of_job(job.id) == []
    await rig.assert_next_job_succeeds(engine)
    assert not engine.status().degraded


async def test_disk_full_mid_write_leaves_no_partial_png(
    rig: Rig,
) -> None:
    engine = await rig.engine()
    real_fsync = os.fsync
    writes = []

    def full_disk(fd: int) -> None:
        writes.append(fd)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    rig.monkeypatch.setattr(os, "fsync", full_disk)
    job = await rig.submit(engine, count=2)
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "No space left" in event.reason
    assert list(engine.store.images_dir.iterdir()) == []
    rig.monkeypatch.setattr(os, "fsync", real_fsync)
    await rig.assert_next_job_succeeds(engine)


async def test_busy_database_is_retried_and_nothing_doubles(
    rig: Rig,
) -> None:
    engine = await rig.engine(engine={"busy_timeout_s": 0.1})
    blocker = sqlite3.connect(engine.store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.4, blocker.execute, args=("COMMIT",)).start()
    job = await rig.submit(engine)
    assert isinstance(await wait_done(engine, job.id), Finished)
    assert len(engine.store.recent_jobs()) == 1
    blocker.close()


async def test_database_locked_too_long_refuses_the_submit_and_keeps_nothing(
    rig: Rig,
) -> None:
    engine = await rig.engine(engine={"busy_timeout_s": 0.1})
    blocker = sqlite3.connect(engine.store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await rig.submit(engine)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert engine.jobs() == []
    assert engine.store.recent_jobs() == []


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("/nonexistent/sd21", "no such file or folder"),
        ("weights.ckpt", "pickle"),
        ("some-org/not-downloaded", "huggingface-cli download"),
    ],
)
async def test_unloadable_model_refuses_at_start_with_what_to_do(
    make_settings: Callable[..., Any], tmp_path: Path, model: str, words: str
) -> None:
    if model.endswith(".ckpt"):
        (tmp_path / model).write_bytes(b"not really a pickle")
        model = str(tmp_path / model)
    settings = make_settings(engine={"model": model, "offline": True})
    engine = Engine(settings, Store(settings.engine.data_dir))
    with pytest.raises(ModelUnavailable) as caught:
        await engine.start()
    assert words in str(caught.value)


async def test_folder_with_only_pickle_weights_is_refused(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    folder = tmp_path / "pickled"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    settings = make_settings(engine={"model": str(folder)})
    with pytest.raises(ModelUnavailable, match="safetensors"):
        await Engine(settings, Store(settings.engine.data_dir)).start()


def test_kill_minus_nine_mid_job_then_restart_finishes_all_twenty(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.crash_worker", str(tiny_model_dir), str(data), "20"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        ids = json.loads(line)["ids"]
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
        if worker.stdout is not None:
            worker.stdout.close()
    assert len(ids) == 20

    async def restart() -> None:
        settings = from_mapping(
            {"engine": {"model": str(tiny_model_dir), "data_dir": str(data)}}, {}
        )
        engine = Engine(settings, Store(data))
        await engine.start()
        try:
            for job_id in ids:
                assert isinstance(await wait_done(engine, job_id, 120), Finished)
        finally:
            await engine.close()

    asyncio.run(restart())
    store = Store(data)
    store.open()
    assert [store.job(i).state for i in ids] == ["done"] * 20  # type: ignore[union-attr]
    images = [image for i in ids for image in store.images_of_job(i)]
    assert len(images) == 20 and len({image.id for image in images}) == 20
    assert sorted(p.name for p in (data / "images").iterdir()) == sorted(
        image.file_name for image in images
    )
    assert store.integrity_check() == "ok"
    store.close()
