"""Many workers and many models: the seam, concurrency, fairness, affinity, LRU, refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine import (
    Batch,
    BatchItem,
    Finished,
    GenerationRequest,
    InvalidRequest,
    ModelUnavailable,
    Started,
)
from tests.conftest import gate, wait_done, wait_until

ROOT = Path(__file__).resolve().parents[2]
EngineFactory = Callable[..., Any]


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with other random weights (same shapes, different pictures)."""
    from engine import tinymodel

    return tinymodel.build(tmp_path_factory.mktemp("models") / "tiny-b", seed=1)


def two_models(tiny: Path, other: Path, **engine: Any) -> dict[str, Any]:
    return {
        "models": {"a": {"path": str(tiny)}, "b": {"path": str(other), "label": "Tiny B"}},
        "engine": {"model": "a", **engine},
    }


def test_importing_the_frontends_never_imports_torch() -> None:
    code = "import engine, bot, web, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_a_batch_crosses_as_json_and_refuses_unknown_keys() -> None:
    batch = Batch(
        id="abc:1",
        model="a",
        kind="variation",
        width=32,
        height=32,
        steps=4,
        guidance=7.0,
        scheduler="DPM++ 2M",
        items=(BatchItem("abc", "a fox", "", (7, 8), init_png=b"\x89PNG bytes"),),
        strength=0.6,
    )
    assert Batch.from_json(batch.to_json()) == batch
    with pytest.raises(ValueError, match="unknown batch keys"):
        Batch.from_json({**batch.to_json(), "pickle": "x"})


async def test_two_cpu_workers_run_two_jobs_at_the_same_time(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"devices": ["cpu", "cpu"], "threads": 1})
    order: list[tuple[str, str]] = []
    engine.listen(lambda e: order.append((type(e).__name__, e.job_id)))
    jobs = [
        await engine.submit(make_request(steps=40, seed=i), make_requester(f"u{i}"))
        for i in range(2)
    ]
    for job in jobs:
        assert isinstance(await wait_done(engine, job.id), Finished)
    kinds = [kind for kind, _ in order if kind in ("Started", "Finished")]
    assert kinds[:2] == ["Started", "Started"], order  # the second started before either ended
    workers = {engine.job(job.id).worker for job in jobs}
    assert workers == {"local-0", "local-1"}
    assert [w.name for w in engine.status().workers] == ["local-0", "local-1"]


async def test_fairness_holds_across_two_workers(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"devices": ["cpu", "cpu"]}, gated=True)
    started: list[str] = []
    engine.listen(lambda e: started.append(e.job_id) if isinstance(e, Started) else None)
    async with gate(engine, 0).held(), gate(engine, 1).held():
        blockers = [await engine.submit(make_request(), make_requester("c")) for _ in range(2)]
        await wait_until(lambda: len(started) == 2)
        a_jobs = [await engine.submit(make_request(), make_requester("a")) for _ in range(6)]
        b_job = await engine.submit(make_request(), make_requester("b"))
    for job in [*blockers, *a_jobs, b_job]:
        await wait_done(engine, job.id)
    assert b_job.id in started[2:4]  # among the first two of A's six and B's one
    assert started[2] == a_jobs[0].id


async def test_a_request_names_a_model_and_its_image_records_it(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    tiny_model_dir: Path,
    second_model_dir: Path,
) -> None:
    engine = await make_engine(**two_models(tiny_model_dir, second_model_dir))
    a = await engine.submit(make_request(seed=5), make_requester())
    b = await engine.submit(make_request(seed=5, model="b"), make_requester())
    done_a, done_b = await wait_done(engine, a.id), await wait_done(engine, b.id)
    assert (done_a.images[0].model, done_b.images[0].model) == ("a", "b")
    pixels = [
        np.asarray(Image.open(engine.store.image_path(done.images[0].file_name)), dtype=int)
        for done in (done_a, done_b)
    ]
    assert np.abs(pixels[0] - pixels[1]).mean() > 1  # the two models draw differently
    with pytest.raises(InvalidRequest, match="did you mean b"):
        await engine.submit(make_request(model="bb"), make_requester())


@pytest.mark.parametrize(
    ("skips", "expected", "resident"),
    [(3, ["a1", "a2", "b1"], ("b",)), (1, ["a1", "b1", "a2"], ("a",))],
)
async def test_the_worker_holding_a_model_goes_first_within_the_skip_bound(
    make_engine: EngineFactory,
    make_request: Any,
    make_requester: Any,
    tiny_model_dir: Path,
    second_model_dir: Path,
    skips: int,
    expected: list[str],
    resident: tuple[str, ...],
) -> None:
    """One worker holding model a; b1 (model b) is first in fair order, a1 and a2 behind it.

    The worker takes a1 and a2 first (no load) unless b1 has been passed over `skips` times.
    """
    sections = two_models(
        tiny_model_dir, second_model_dir, resident_models=1, max_affinity_skips=skips
    )
    engine = await make_engine(gated=True, **sections)
    names: dict[str, str] = {}
    started: list[str] = []
    engine.listen(lambda e: started.append(e.job_id) if isinstance(e, Started) else None)
    async with gate(engine).held():
        blocker = await engine.submit(make_request(), make_requester("z"))
        await wait_until(lambda: started)
        for name, model, user in (("b1", "b", "u1"), ("a1", "a", "u2"), ("a2", "a", "u3")):
            names[(await engine.submit(make_request(model=model), make_requester(user))).id] = name
    for job_id in [blocker.id, *names]:
        assert isinstance(await wait_done(engine, job_id), Finished)
    assert [names[job_id] for job_id in started[1:]] == expected
    assert engine.status().workers[0].resident == resident  # one model resident: the last one


async def test_a_model_no_worker_can_load_is_refused_and_said_in_status(
    make_engine: EngineFactory, make_request: Any, make_requester: Any, tiny_model_dir: Path
) -> None:
    sections = two_models(tiny_model_dir, tiny_model_dir.parent / "missing")
    engine = await make_engine(**sections)
    with pytest.raises(ModelUnavailable):
        await engine.submit(make_request(model="b"), make_requester())
    assert any("model b unavailable" in problem for problem in engine.status().degraded)
    job = await engine.submit(make_request(), make_requester())
    assert isinstance(await wait_done(engine, job.id), Finished)


async def test_cancel_on_one_worker_leaves_the_other_running(
    make_engine: EngineFactory, make_request: Any, make_requester: Any
) -> None:
    engine = await make_engine(engine={"devices": ["cpu", "cpu"], "threads": 1})
    keep = await engine.submit(make_request(steps=30), make_requester("keep"))
    stop = await engine.submit(make_request(steps=100), make_requester("stop"))
    await wait_until(lambda: engine.job(stop.id).step >= 2, timeout_s=30)
    await engine.cancel(stop.id, by=make_requester("stop"))
    ends = await asyncio.gather(wait_done(engine, keep.id), wait_done(engine, stop.id))
    assert [type(end).__name__ for end in ends] == ["Finished", "Cancelled"]
    again = await engine.submit(make_request(), make_requester("stop"))
    assert isinstance(await wait_done(engine, again.id), Finished)


async def test_status_lists_each_worker_with_its_device_and_resident_models(
    make_engine: EngineFactory,
) -> None:
    engine = await make_engine(engine={"devices": ["cpu", "cpu"]})
    workers = engine.status().workers
    assert [(w.name, w.device, w.resident) for w in workers] == [
        ("local-0", "cpu", ("tiny",)),
        ("local-1", "cpu", ("tiny",)),
    ]
    assert engine.status().model == "tiny"  # the folder's name, never its path


def test_a_request_with_a_model_keeps_it_through_json() -> None:
    request = GenerationRequest("a fox", model="b")
    assert GenerationRequest.from_dict(request.to_dict()).model == "b"
