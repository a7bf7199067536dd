"""8. remote — GPU boxes over Celery + Redis, measured with CPU boxes on this machine.

A redis-server of its own on a free 127.0.0.1 port (no persistence), the front in this process
(`engine.workers = "celery"`), and boxes as child processes (`python -m engine worker`, one
torch thread each) on the tiny model:

1. throughput: the same 12 jobs (128 px, 20 steps) submitted at once with 1, 2 and 3 boxes
   (boxes added one by one, then taken away, so each count runs twice); ratio = jobs per second
   with N boxes ÷ with 1. The goal is ≥ 0.9 × N for N ≤ 2; with 3 boxes on 2 cores (and the
   front on them too) the figure is reported as it is.
2. dispatch overhead: one 64 px, 1-step job at a time, submit → Finished, alternating an
   in-process local worker and one remote box; overhead = remote − local per job (the JSON,
   the broker hops, PNG encoding on the box, the result poll).
3. failover: a 100-step job on one of two boxes, that box SIGKILLed; the time until the job runs
   again on the other box (`engine.worker_timeout_s` at its default, 6 s), three times.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.contenders import EngineSide, check_outcomes, works

JOBS = 12
SIZE_PX = 128
STEPS = 20
OVERHEAD_JOBS = 15
KILLS = 3
GOAL = 0.9  # × N boxes, for N ≤ 2


def _box(folder: Path, model: Path, url: str, name: str) -> Any:
    from tests.system.remote import BoxProcess

    box = BoxProcess(folder / name, model, url, name, worker_timeout_s=6, preview_every_steps=5)
    box.start()
    return box


async def _throughput(side: EngineSide, boxes: int) -> float:
    await _wait_slots(side, boxes)
    started = time.perf_counter()
    outcomes = await side.generate(works(JOBS, SIZE_PX, STEPS, first_seed=100 + boxes))
    seconds = time.perf_counter() - started
    check_outcomes(outcomes)
    return seconds


async def _wait_slots(side: EngineSide, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(1 for w in side.engine.workers if w.info().is_alive) == count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"expected {count} live boxes")


async def _one(side: EngineSide, seed: int) -> float:
    started = time.perf_counter()
    outcomes = await side.generate(works(1, 64, 1, first_seed=seed))
    check_outcomes(outcomes)
    return time.perf_counter() - started


async def _failover(side: EngineSide, boxes: list[Any]) -> list[float]:
    from engine import GenerationRequest, Requester

    moved = []
    for kill in range(KILLS):
        await _wait_slots(side, len(boxes))
        request = GenerationRequest(prompt=f"failover {kill}", width=64, height=64, steps=100)
        view = await side.engine.submit(request, Requester(source="web", user_id=f"k{kill}"))
        job = await _running(side, view.id, attempt=1)
        victim = next(box for box in boxes if job.worker.startswith(box.name + "/"))
        killed_at = time.perf_counter()
        victim.kill()
        await _running(side, view.id, attempt=2)
        moved.append(time.perf_counter() - killed_at)
        victim.spawn()
        await asyncio.to_thread(victim.wait_heartbeat)
        await side.engine.cancel(view.id, Requester(source="web", user_id=f"k{kill}"))
    return moved


async def _running(side: EngineSide, job_id: str, attempt: int, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = side.engine.table.get(job_id)
        if job is not None and job.state.value == "running" and job.attempt >= attempt:
            return job
        await asyncio.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not run (attempt {attempt})")


async def run_async() -> dict[str, Any]:
    """Start Redis, the front and boxes; return the three sets of figures."""
    from bench.overhead import tiny_model
    from tests.system.remote import RedisServer

    model = tiny_model()
    folder = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    redis_server = RedisServer(folder / "redis")
    redis_server.start()
    boxes: list[Any] = []
    front = EngineSide(model, threads=1, workers="celery", broker_url=redis_server.url)
    local = EngineSide(model, threads=1, max_batch=1)
    try:
        await front.start()
        seconds: dict[int, list[float]] = {1: [], 2: [], 3: []}
        for count in (1, 2, 3):
            boxes.append(_box(folder, model, redis_server.url, f"box{count}"))
            if count == 1:
                await _throughput(front, 1)  # warm: the first job on a box allocates
            seconds[count].append(await _throughput(front, count))
        for count in (2, 1):
            boxes.pop().stop()  # the front stops counting it after worker_timeout_s
            seconds[count].append(await _throughput(front, count))
        await local.start()
        remote_s, local_s = [], []
        for n in range(OVERHEAD_JOBS):
            pair = [(_one(front, 1000 + n), remote_s), (_one(local, 1000 + n), local_s)]
            for coroutine, into in pair if n % 2 == 0 else pair[::-1]:
                into.append(await coroutine)
        boxes.append(_box(folder, model, redis_server.url, "box2"))
        moved = await _failover(front, boxes)
    finally:
        await front.close()
        await local.close()
        for box in boxes:
            box.stop()
        redis_server.stop()
    per = {n: report.summary(values) for n, values in seconds.items()}
    ratios = {n: round(per[1]["median"] / per[n]["median"], 3) for n in per}
    overhead_ms = 1000 * (statistics.median(remote_s) - statistics.median(local_s))
    return {
        "name": "remote",
        "goal": f"throughput ≥ {GOAL} × N boxes for N ≤ 2",
        "jobs": JOBS,
        "size_px": SIZE_PX,
        "steps": STEPS,
        "seconds": per,
        "ratios": ratios,
        "meets_goal": all(ratios[n] >= GOAL * n for n in (1, 2)),
        "remote_job_s": report.summary(remote_s),
        "local_job_s": report.summary(local_s),
        "dispatch_overhead_ms": round(overhead_ms, 1),
        "failover_s": report.summary(moved),
        "worker_timeout_s": 6,
    }


def run() -> dict[str, Any]:
    """Run the benchmark, write results/remote.json and a RESULTS.md section."""
    facts = report.machine()
    data = asyncio.run(run_async())
    data["machine"] = facts
    report.write("remote", data)
    report.append("remote (Celery + Redis boxes on this machine)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    rows = [
        f"| {n} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} "
        f"| {data['jobs'] / s['median']:.2f} | {data['ratios'][n]:.2f} |"
        for n, s in sorted(data["seconds"].items(), key=lambda item: int(item[0]))
    ]
    verdict = "meets" if data["meets_goal"] else "misses"
    remote, local, moved = data["remote_job_s"], data["local_job_s"], data["failover_s"]
    return [
        f"{data['jobs']} jobs of {data['size_px']} px, {data['steps']} steps (tiny model), "
        "submitted at once; boxes are `python -m engine worker` processes with one torch "
        'thread each, the front (engine.workers = "celery") runs in the benchmark\'s process; '
        "each box count runs twice (boxes added, then taken away).",
        "",
        "| boxes | wall s (median) | min | max | jobs/s | ratio to 1 box |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Throughput {verdict} {data['goal']} (3 boxes share 2 cores with the front).",
        "",
        f"Dispatch overhead, one 64 px 1-step job at a time: remote {1000 * remote['median']:.0f}"
        f" ms, local {1000 * local['median']:.0f} ms per job (medians of {remote['n']}): "
        f"**{data['dispatch_overhead_ms']:.0f} ms** per job for front → box → front.",
        "",
        f"Failover (SIGKILL of the busy box, worker_timeout_s = {data['worker_timeout_s']}): the "
        f"job ran again on the other box after {moved['median']:.1f} s (median of {moved['n']}; "
        f"{moved['min']:.1f}–{moved['max']:.1f} s). Raw values: `bench/results/remote.json`.",
    ]


if __name__ == "__main__":
    run()
