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
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import Engine, Failed, Finished, ModelUnavailable, Progress, Store, StoreError
from engine.config import from_mapping
from tests.conftest import wait_done

EngineFactory = Callable[..., Any]
ROOT = Path(__file__).parents[2]


def patch_unet(engine: Engine, monkeypatch: pytest.MonkeyPatch, fault: Callable[..., Any]) -> None:
    unet = engine.pipeline._pipe().unet
    original = unet.forward
    monkeypatch.setattr(unet, "forward", lambda *a, **k: fault(original, *a, **k))


async def test_exception_mid_generation_fails_that_job_and_the_next_succeeds(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    calls = 0

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("cuDNN exploded")
        return original(*args, **kwargs)

    patch_unet(engine, monkeypatch, fault)
    bad = await engine.submit(make_request(), make_requester())
    event = await wait_done(engine, bad.id)
    assert isinstance(event, Failed)
    assert "RuntimeError" in event.reason
    assert not engine._lock.locked()
    good = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, good.id), Finished)
    assert engine.job(bad.id).state == "failed"


async def test_out_of_memory_retries_once_with_slicing_and_tiling(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    raised = []

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not raised:
            raised.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    patch_unet(engine, monkeypatch, fault)
    job = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, job.id), Finished)
    assert engine.pipeline._is_memory_saving


async def test_out_of_memory_twice_fails_clearly_and_the_queue_keeps_running(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    is_broken = True

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if is_broken:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(*args, **kwargs)

    patch_unet(engine, monkeypatch, fault)
    job = await engine.submit(make_request(), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "out of memory" in event.reason
    is_broken = False
    nxt = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, nxt.id), Finished)
    assert engine.status().failures.get("out_of_memory") == 1


def patch_vae_decode(engine: Engine, monkeypatch: pytest.MonkeyPatch, bad_calls: int) -> list[int]:
    vae = engine.pipeline._pipe().vae
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
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    calls = patch_vae_decode(engine, monkeypatch, bad_calls=1)
    job = await engine.submit(make_request(), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Finished)
    assert len(calls) == 2


async def test_nan_image_twice_is_never_published_as_success(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    patch_vae_decode(engine, monkeypatch, bad_calls=2)
    job = await engine.submit(make_request(), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "NaN" in event.reason
    assert engine.store.images_of_job(job.id) == []


async def test_a_hanging_step_is_interrupted_by_the_watchdog(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine(engine={"job_timeout_s": 1, "hang_grace_s": 10})
    hung = []

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not hung:
            hung.append(True)
            time.sleep(2)
        return original(*args, **kwargs)

    patch_unet(engine, monkeypatch, fault)
    job = await engine.submit(make_request(steps=10), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "timed out after 1 s" in event.reason
    assert not engine._lock.locked()
    nxt = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, nxt.id), Finished)


async def test_a_stuck_worker_thread_is_replaced(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine(engine={"job_timeout_s": 1, "hang_grace_s": 0})
    release = threading.Event()

    def fault(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("imagine-gpu") and not release.is_set():
            release.wait(5)
        return original(*args, **kwargs)

    patch_unet(engine, monkeypatch, fault)
    first_thread = engine._gpu
    job = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, job.id), Failed)
    assert engine._gpu is not first_thread
    assert engine.status().degraded
    release.set()
    nxt = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, nxt.id), Finished)


async def test_close_requeues_the_running_job_for_the_next_start(
    make_settings: Callable[..., Any], make_request: Any, make_requester: Any
) -> None:
    settings = make_settings()
    engine = Engine(settings, Store(settings.engine.data_dir))
    await engine.start()
    job = await engine.submit(make_request(steps=100), make_requester())
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
        await again.cancel(job.id, by=make_requester())
    finally:
        await again.close()


async def test_unreadable_images_folder_fails_the_job_and_reports_degraded(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine()
    images = engine.store.images_dir
    images.rename(images.with_name("images.away"))
    images.write_text("not a folder")  # writes now fail like on a broken disk
    job = await engine.submit(make_request(count=2), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "cannot write image" in event.reason
    assert any("cannot write image" in d for d in engine.status().degraded)
    images.unlink()
    images.with_name("images.away").rename(images)
    assert engine.store.images_of_job(job.id) == []
    nxt = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, nxt.id), Finished)
    assert not engine.status().degraded


async def test_disk_full_mid_write_leaves_no_partial_png(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = await make_engine()
    real_fsync = os.fsync
    writes = []

    def full_disk(fd: int) -> None:
        writes.append(fd)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    job = await engine.submit(make_request(count=2), make_requester())
    event = await wait_done(engine, job.id)
    assert isinstance(event, Failed) and "No space left" in event.reason
    assert list(engine.store.images_dir.iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    nxt = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, nxt.id), Finished)


async def test_busy_database_is_retried_and_nothing_doubles(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"busy_timeout_s": 0.1})
    blocker = sqlite3.connect(engine.store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.4, blocker.execute, args=("COMMIT",)).start()
    job = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, job.id), Finished)
    assert len(engine.store.recent_jobs()) == 1
    blocker.close()


async def test_database_locked_too_long_refuses_the_submit_and_keeps_nothing(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"busy_timeout_s": 0.1})
    blocker = sqlite3.connect(engine.store.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await engine.submit(make_request(), make_requester())
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
