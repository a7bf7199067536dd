"""3. batching — 4 compatible jobs with engine.max_batch = 4 vs 1 (tiny model; full size optional).

Two arrival patterns, each timed from the first submit to the last Finished:
- burst: 4 jobs arrive together at an idle engine;
- queued: 4 jobs arrive while another job runs (the blocker, also timed), so all 4 wait.
Bare diffusers gives the bound on this hardware: 4 calls of 1 image vs 1 call of 4.
The engines (max_batch 1 and 4) and bare alternate every repetition.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import models, report
from bench.contenders import Bare, EngineSide, Work, check_outcomes, works

JOBS = 4
TINY = {"size_px": 64, "steps": 20, "reps": 4}
FULLSIZE = {"size_px": 512, "steps": 2, "reps": 1}


async def burst(side: EngineSide, batch: list[Work]) -> tuple[float, list[float]]:
    """Submit all jobs at once to the (idle) engine; return (total s, per-job latency s)."""
    started = time.perf_counter()
    outcomes = await side.generate(batch, user_prefix="burst")
    check_outcomes(outcomes)
    return time.perf_counter() - started, [o.finished_s for o in outcomes]


async def queued(side: EngineSide, blocker: Work, batch: list[Work]) -> tuple[float, list[float]]:
    """Submit a blocker, then the jobs while it runs; return (total s incl. blocker, latencies)."""
    started = time.perf_counter()
    first = asyncio.create_task(side.generate([blocker], user_prefix="blocker"))
    while side.engine.status().running_job_ids == ():
        await asyncio.sleep(0.001)
    outcomes = await side.generate(batch, user_prefix="queued")
    check_outcomes([*(await first), *outcomes])
    return time.perf_counter() - started, [o.finished_s for o in outcomes]


def bare_pair(bare: Bare, batch: list[Work]) -> tuple[float, float]:
    """Return (seconds for one image per call, seconds for one call of all images)."""
    started = time.perf_counter()
    for work in batch:
        bare.generate([work])
    single = time.perf_counter() - started
    started = time.perf_counter()
    bare.generate(batch)
    return single, time.perf_counter() - started


async def measure(folder: Path, size_px: int, steps: int, reps: int) -> dict[str, Any]:
    """Run every pattern for max_batch 1 and 4 plus bare, interleaved; return the figures."""
    bare = Bare(folder)
    sides = {n: EngineSide(folder, threads=1, max_batch=n) for n in (1, JOBS)}
    raw: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    try:
        for side in sides.values():
            await side.start()
            await side.generate(works(1, size_px, steps))  # warm-up
        for rep in range(reps):
            batch = works(JOBS, size_px, steps, first_seed=500 + rep * 10)
            blocker = works(1, size_px, steps, first_seed=499)[0]
            single, together = bare_pair(bare, batch)
            raw.setdefault("bare_4_calls", []).append(single)
            raw.setdefault("bare_1_call", []).append(together)
            order = (1, 4) if rep % 2 == 0 else (4, 1)
            for max_batch in order:
                for pattern in ("burst", "queued"):
                    key = f"{pattern}_max_batch_{max_batch}"
                    if pattern == "burst":
                        seconds, lat = await burst(sides[max_batch], batch)
                    else:
                        seconds, lat = await queued(sides[max_batch], blocker, batch)
                    raw.setdefault(key, []).append(seconds)
                    latencies.setdefault(key, []).extend(lat)
    finally:
        for side in sides.values():
            await side.close()
    return summarise(raw, latencies, size_px, steps, reps)


def summarise(
    raw: dict[str, list[float]],
    latencies: dict[str, list[float]],
    size_px: int,
    steps: int,
    reps: int,
) -> dict[str, Any]:
    """Turn raw seconds into medians, images/s and the speedups max_batch 4 brings."""
    figures: dict[str, Any] = {"size_px": size_px, "steps": steps, "jobs": JOBS, "reps": reps}
    for key, values in raw.items():
        images = JOBS + (1 if key.startswith("queued") else 0)
        median = report.summary(values)["median"]
        figures[key] = {
            "seconds": report.summary(values),
            "images_per_s": round(images / median, 4),
            "job_latency_s": report.summary(latencies[key]) if key in latencies else None,
        }
    for pattern in ("burst", "queued"):
        one = figures[f"{pattern}_max_batch_1"]["seconds"]["median"]
        four = figures[f"{pattern}_max_batch_4"]["seconds"]["median"]
        figures[f"{pattern}_speedup"] = round(one / four, 4)
    bare_single = figures["bare_4_calls"]["seconds"]["median"]
    figures["bare_speedup"] = round(bare_single / figures["bare_1_call"]["seconds"]["median"], 4)
    figures["ratio"] = report.ratio(
        figures["queued_max_batch_4"]["seconds"]["median"],
        figures["queued_max_batch_1"]["seconds"]["median"],
    )
    return figures


def run(fullsize: bool = False) -> dict[str, Any]:
    """Run the tiny case (and the full-size one when asked); write results and RESULTS.md."""
    from bench.overhead import tiny_model

    facts = report.machine()
    data: dict[str, Any] = {"name": "batching", "machine": facts}
    data["tiny"] = asyncio.run(measure(tiny_model(), **TINY))
    if fullsize:
        data["fullsize"] = asyncio.run(measure(models.ensure(), **FULLSIZE))
    data["ratio"] = data["tiny"]["ratio"]
    report.write("batching", data)
    report.append("batching (CPU)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    out = [
        "ratio = queued pattern, time with max_batch 4 ÷ max_batch 1 (below 1: batching pays).",
        "",
        "| model | pattern | max_batch 1 s | max_batch 4 s | speedup | images/s (4) "
        "| job latency median (1 → 4) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in ("tiny", "fullsize"):
        figures = data.get(model)
        if not figures:
            continue
        label = f"{model} {figures['size_px']} px, {figures['steps']} steps"
        for pattern in ("burst", "queued"):
            one, four = figures[f"{pattern}_max_batch_1"], figures[f"{pattern}_max_batch_4"]
            out.append(
                f"| {label} | {pattern} | {one['seconds']['median']:.2f} "
                f"| {four['seconds']['median']:.2f} | {figures[f'{pattern}_speedup']:.3f} "
                f"| {four['images_per_s']:.3f} | {one['job_latency_s']['median']:.2f} → "
                f"{four['job_latency_s']['median']:.2f} s |"
            )
        out.append(
            f"| {label} | bare: 4 calls vs 1 call of 4 "
            f"| {figures['bare_4_calls']['seconds']['median']:.2f} "
            f"| {figures['bare_1_call']['seconds']['median']:.2f} "
            f"| {figures['bare_speedup']:.3f} | | |"
        )
    out += ["", "Raw values: `bench/results/batching.json`."]
    return out


if __name__ == "__main__":
    run()
