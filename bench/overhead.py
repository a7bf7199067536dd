"""1. overhead — what the engine costs around `pipe(...)`: tiny SD-2-shaped model, 64 and 128 px.

Jobs of one image each, alternating: bare `pipe(...)` + `image.save`, then the same request
(prompt, seed) submitted to the engine and followed to Finished (PNG with metadata on disk,
record committed); the order flips every repetition (A/B, B/A).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import models, report
from bench.contenders import Bare, EngineSide, check_outcomes, works

SIZES_PX = (64, 128)
STEPS = 20
REPS = {64: 12, 128: 6}
GOAL = 1.02


def tiny_model() -> Path:
    """Build the tests' tiny model once into the benchmark cache; return its folder."""
    from engine import tinymodel

    folder = models.CACHE / "tiny"
    if not (folder / "model_index.json").exists():
        tinymodel.build(folder)
    return folder


async def measure(bare: Bare, side: EngineSide, size: int, reps: int) -> dict[str, Any]:
    """Interleave single images, bare and engine (order alternating); return the figures.

    Wall time and process CPU time (all threads, so the engine's I/O thread counts) are both
    kept: CPU time barely moves when other processes load the machine, wall time does.
    """
    warm = works(1, size, STEPS)
    bare.generate(warm)
    check_outcomes(await side.generate(warm))
    walls: dict[str, list[float]] = {"bare": [], "engine": []}
    cpus: dict[str, list[float]] = {"bare": [], "engine": []}
    progress_s: list[float] = []
    preview_s: list[float] = []
    for rep in range(reps):
        work = works(1, size, STEPS, first_seed=1000 + rep)
        for name in ("bare", "engine") if rep % 2 == 0 else ("engine", "bare"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "bare":
                bare.generate(work)
            else:
                outcomes = await side.generate(work)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
            if name == "engine":
                check_outcomes(outcomes)
                progress_s.append(outcomes[0].first_progress_s or float("nan"))
                preview_s.append(outcomes[0].first_preview_s or float("nan"))
    figures: dict[str, Any] = {"size_px": size, "steps": STEPS, "jobs": reps}
    for label, values in (("wall", walls), ("cpu", cpus)):
        bare_sum, engine_sum = report.summary(values["bare"]), report.summary(values["engine"])
        paired = [e / b for e, b in zip(values["engine"], values["bare"], strict=True)]
        figures[label] = {
            "bare_s": bare_sum,
            "engine_s": engine_sum,
            "ratio": report.ratio(engine_sum["median"], bare_sum["median"]),
            "paired_ratio_median": round(report.summary(paired)["median"], 4),
            "overhead_per_job_ms": round((engine_sum["median"] - bare_sum["median"]) * 1000, 2),
        }
    figures["ratio"] = figures["wall"]["ratio"]
    figures["first_progress_s"] = report.summary(progress_s)
    figures["first_preview_s"] = report.summary(preview_s)
    return figures


async def run_async(reps: dict[int, int] = REPS) -> dict[str, Any]:
    """Load both sides once, measure each size, return the results document."""
    folder = tiny_model()
    bare = Bare(folder)
    side = EngineSide(folder, threads=1, max_batch=1)
    await side.start()
    try:
        sizes = [await measure(bare, side, size, reps[size]) for size in SIZES_PX]
    finally:
        await side.close()
    worst = max(s["ratio"] for s in sizes)
    return {
        "name": "overhead",
        "goal": f"ratio ≤ {GOAL}",
        "ratio": worst,
        "meets_goal": worst <= GOAL,
        "preview_every_steps": side.settings.engine.preview_every_steps,
        "sizes": sizes,
        "engine_retries": side.retries.count,
    }


def run(reps: dict[int, int] = REPS) -> dict[str, Any]:
    """Run the benchmark, write results/overhead.json and a RESULTS.md section."""
    facts = report.machine()
    data = asyncio.run(run_async(reps))
    data["machine"] = facts
    report.write("overhead", data)
    report.append("overhead (tiny model, CPU, 1 torch thread)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    out = [
        f"Tiny SD-2-shaped model, {STEPS} steps DPM++ 2M, one image per job; bare and engine "
        "alternate job by job (A/B, B/A); torch.set_num_threads(1) (2 shared cores: other work "
        "may run, see the load average above). CPU = process CPU time, all threads.",
        "",
        "| size | jobs | bare wall s | engine wall s | wall ratio | paired | CPU ratio "
        "| overhead/job (wall, CPU) | first progress | first preview |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["sizes"]:
        wall, cpu = s["wall"], s["cpu"]
        out.append(
            f"| {s['size_px']} px | {s['jobs']} | {wall['bare_s']['median']:.3f} "
            f"| {wall['engine_s']['median']:.3f} | **{wall['ratio']:.3f}** "
            f"| {wall['paired_ratio_median']:.3f} | {cpu['ratio']:.3f} "
            f"| {wall['overhead_per_job_ms']:.1f} ms, {cpu['overhead_per_job_ms']:.1f} ms "
            f"| {report.ms(s['first_progress_s']['median'])} "
            f"| {report.ms(s['first_preview_s']['median'])} |"
        )
    verdict = "meets" if data["meets_goal"] else "misses"
    out += [
        "",
        f"Worst wall ratio {data['ratio']:.3f}: {verdict} the goal {data['goal']}. "
        f"Preview every {data['preview_every_steps']} steps. Raw values: "
        "`bench/results/overhead.json`.",
    ]
    return out


if __name__ == "__main__":
    run()
