"""GPU benchmark (run by gpu.sh on a lent H100/H200): SD 2.1 architecture, random weights, fp16.

Phases, most important first; each writes gpu.json again, so a run stopped at its time limit
keeps what it measured: build → load → engine vs bare at 768 and 512 px (25 steps, DPM++ 2M,
interleaved) → UNet/VAE/text-encoder micro timings and the fraction of the physical floor →
batching 1/2/4 → channels_last → torch.compile (warm-up reported apart).

GPU_DRY_RUN=1 runs the same code on the CPU with a miniature model, to prove the script works.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import batching as batching_mod
from bench import models, report
from bench.contenders import Bare, EngineSide, Work, check_outcomes, works

PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16/fp16 tensor-core peak
GUIDED_STEP_TFLOP = {512: 1.61, 768: 4.30}  # SD 2.1 UNet, batch 2 (classifier-free guidance)


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions for a real run or a dry run."""

    shape: models.Shape
    device: str
    dtype: str
    sizes: tuple[int, ...]
    batch_size_px: int
    steps: int
    reps: int
    batch_reps: int
    deadline_s: float
    is_dry: bool


def plan_from_env() -> Plan:
    """Return the real plan, or the miniature CPU plan when GPU_DRY_RUN=1."""
    deadline = float(os.environ.get("GPU_DEADLINE_S", "420"))
    if os.environ.get("GPU_DRY_RUN") == "1":
        return Plan(models.MINI, "cpu", "float32", (64, 32), 32, 3, 1, 1, deadline, True)
    return Plan(models.SD21, "cuda", "float16", (768, 512), 512, 25, 3, 2, deadline, False)


class Run:
    """Holds the plan, the two sides, the clock and the results file."""

    def __init__(self, plan: Plan, out: Path) -> None:
        import torch

        self.torch = torch
        self.plan = plan
        self.out = out
        self.t0 = time.monotonic()
        self.results: dict[str, Any] = {"machine": report.machine(), "plan": repr(plan)}
        self.results["phases"] = {}
        self.folder: Path | None = None
        self.bare: Bare | None = None
        self.engine: EngineSide | None = None

    @property
    def elapsed_s(self) -> float:
        """Return seconds since the script started."""
        return time.monotonic() - self.t0

    def save(self) -> None:
        """Write gpu.json with everything measured so far."""
        import json

        self.results["elapsed_s"] = round(self.elapsed_s, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=2, default=str))

    async def phase(self, name: str, body: Callable[[], Awaitable[Any]], need_s: float) -> None:
        """Run one phase if time allows; record its figures or its error."""
        left = self.plan.deadline_s - self.elapsed_s
        if left < need_s:
            self.results["phases"][name] = {"skipped": f"{left:.0f} s left, needs {need_s:.0f}"}
            print(f"[{self.elapsed_s:6.1f}s] skip {name}", flush=True)
            self.save()
            return
        print(f"[{self.elapsed_s:6.1f}s] {name} ...", flush=True)
        started = time.monotonic()
        try:
            figures = await body()
        except Exception as error:  # one phase failing must not lose the others
            import traceback

            figures = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
        figures["phase_s"] = round(time.monotonic() - started, 1)
        self.results["phases"][name] = figures
        print(f"[{self.elapsed_s:6.1f}s] {name}: {_short(figures)}", flush=True)
        self.save()

    # -- measuring -------------------------------------------------------------------------

    def sync(self) -> None:
        """Wait for the GPU (a no-op on the CPU)."""
        if self.plan.device == "cuda":
            self.torch.cuda.synchronize()

    def vram_start(self) -> int:
        """Reset the peak counter; return the bytes allocated now."""
        if self.plan.device != "cuda":
            return 0
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        return int(self.torch.cuda.memory_allocated())

    def vram_peak_above(self, before: int) -> int:
        """Return the peak bytes allocated since vram_start, above what was there before."""
        if self.plan.device != "cuda":
            return 0
        return int(self.torch.cuda.max_memory_allocated()) - before

    async def timed_bare(self, batch: list[Work]) -> tuple[float, int]:
        """Return (seconds, peak extra VRAM bytes) of one bare call plus PNG saves."""
        assert self.bare is not None
        before = self.vram_start()
        started = time.perf_counter()
        self.bare.generate(batch)
        return time.perf_counter() - started, self.vram_peak_above(before)

    async def timed_engine(self, side: EngineSide, batch: list[Work]) -> tuple[float, int, list]:
        """Return (seconds until every job Finished, peak extra VRAM, per-job outcomes)."""
        before = self.vram_start()
        started = time.perf_counter()
        outcomes = await side.generate(batch)
        seconds = time.perf_counter() - started
        check_outcomes(outcomes)
        return seconds, self.vram_peak_above(before), outcomes


async def main() -> None:
    """Run every phase in order of importance; write gpu.json after each."""
    plan = plan_from_env()
    default = Path("/tmp/imagine-bench-gpu-dry") if plan.is_dry else report.RESULTS_DIR
    out = Path(os.environ.get("OUT") or default)
    run = Run(plan, out)
    if plan.device == "cuda":
        run.results["gpu"] = run.torch.cuda.get_device_name()
    await run.phase("build", lambda: build(run), 0)
    await run.phase("load", lambda: load(run), 0)
    for size in plan.sizes:
        await run.phase(f"engine_vs_bare_{size}px", lambda s=size: engine_vs_bare(run, s), 20)
    for size in plan.sizes:
        await run.phase(f"micro_{size}px", lambda s=size: micro(run, s), 10)
    await run.phase("batching", lambda: batching(run), 45)
    await run.phase("channels_last", lambda: option(run, "channels_last"), 45)
    await run.phase("compile", lambda: option(run, "compile"), 150)
    if run.engine is not None:
        await run.engine.close()
    run.save()
    print(f"[{run.elapsed_s:6.1f}s] done; results in {out / 'gpu.json'}", flush=True)


async def build(run: Run) -> dict[str, Any]:
    """Build the random-weight model on the device and save it as a diffusers folder."""
    started = time.monotonic()
    run.folder = models.ensure(run.plan.shape, run.plan.dtype, device=run.plan.device)
    counts = models.parameter_counts(run.folder)
    return {"seconds": round(time.monotonic() - started, 1), "parameters": counts}


async def load(run: Run) -> dict[str, Any]:
    """Load bare diffusers and the engine (max_batch 4) from the same folder."""
    assert run.folder is not None
    before = run.vram_start()
    started = time.monotonic()
    run.bare = Bare(run.folder, run.plan.device, run.plan.dtype)
    bare_s = time.monotonic() - started
    weights = run.vram_peak_above(before)
    run.engine = engine_side(run)
    started = time.monotonic()
    await run.engine.start()
    return {
        "bare_load_s": round(bare_s, 2),
        "engine_start_s": round(time.monotonic() - started, 2),
        "weights_vram_bytes": weights,
    }


def engine_side(run: Run, **options: Any) -> EngineSide:
    """Return an engine for the plan's device and dtype with extra engine.* options."""
    assert run.folder is not None
    return EngineSide(
        run.folder, device=run.plan.device, dtype=run.plan.dtype, max_batch=4, **options
    )


async def engine_vs_bare(run: Run, size: int) -> dict[str, Any]:
    """Interleave bare and engine single images at one size; medians and ratio."""
    assert run.engine is not None
    await run.timed_bare(works(1, size, run.plan.steps))  # warm-up (cuDNN, allocator)
    await run.timed_engine(run.engine, works(1, size, run.plan.steps))
    bare_s, engine_s, bare_mem, engine_mem = [], [], [], []
    for rep in range(run.plan.reps):
        batch = works(1, size, run.plan.steps, first_seed=100 + rep)
        seconds, peak = await run.timed_bare(batch)
        bare_s.append(seconds)
        bare_mem.append(peak)
        seconds, peak, _ = await run.timed_engine(run.engine, batch)
        engine_s.append(seconds)
        engine_mem.append(peak)
    bare, engine = report.summary(bare_s), report.summary(engine_s)
    floor_s = run.plan.steps * GUIDED_STEP_TFLOP.get(size, 0) / PEAK_TFLOPS
    return {
        "steps": run.plan.steps,
        "bare_s_per_image": bare,
        "engine_s_per_image": engine,
        "ratio": report.ratio(engine["median"], bare["median"]),
        "bare_peak_extra_vram_bytes": max(bare_mem),
        "engine_peak_extra_vram_bytes": max(engine_mem),
        "floor_s_per_image": round(floor_s, 4),
        "bare_fraction_of_floor": round(floor_s / bare["median"], 4),
        "engine_fraction_of_floor": round(floor_s / engine["median"], 4),
        "engine_retries": run.engine.retries.count,
    }


async def micro(run: Run, size: int) -> dict[str, Any]:
    """Time one guided UNet step, the text encoder and the VAE decode alone."""
    assert run.bare is not None
    torch, pipe = run.torch, run.bare.pipe
    dtype = getattr(torch, run.plan.dtype)
    latent = size // 8
    sample = torch.randn(2, 4, latent, latent, device=run.plan.device, dtype=dtype)
    context = torch.randn(2, 77, pipe.text_encoder.config.hidden_size, device=run.plan.device)
    context = context.to(dtype)
    tokens = torch.randint(0, 500, (2, 77), device=run.plan.device)
    step = torch.tensor(500, device=run.plan.device)
    with torch.inference_mode():
        unet_s = run_timed(run, lambda: pipe.unet(sample, step, encoder_hidden_states=context))
        text_s = run_timed(run, lambda: pipe.text_encoder(tokens))
        vae_s = run_timed(run, lambda: pipe.vae.decode(sample[:1] / 0.18215), repeats=3)
    figures: dict[str, Any] = {
        "unet_guided_step_s": round(unet_s, 5),
        "text_encoder_s": round(text_s, 5),
        "vae_decode_s": round(vae_s, 5),
    }
    tflop = GUIDED_STEP_TFLOP.get(size)
    if tflop:
        floor = tflop / PEAK_TFLOPS
        figures["unet_floor_s"] = round(floor, 5)
        figures["unet_fraction_of_floor"] = round(floor / unet_s, 4)
        figures["unet_tflops_achieved"] = round(tflop / unet_s, 1)
    ab = run.results["phases"].get(f"engine_vs_bare_{size}px", {})
    for side in ("bare", "engine"):
        total = ab.get(f"{side}_s_per_image", {}).get("median")
        if total:
            loop_s = max(total - text_s - vae_s, 1e-9)
            figures[f"{side}_it_per_s"] = round(run.plan.steps / loop_s, 2)
    return figures


def run_timed(run: Run, call: Callable[[], Any], repeats: int = 10) -> float:
    """Return the median seconds of `call` after warm-ups, synchronised with the device."""
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        run.sync()
        started = time.perf_counter()
        call()
        run.sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def batching(run: Run) -> dict[str, Any]:
    """1, 2, 4 images: one bare call of b prompts vs b engine jobs (max_batch 4).

    Engine jobs arrive two ways: together at an idle engine (the first starts alone), and
    queued behind a running job (all b run as one call; the blocker's time is included).
    """
    assert run.engine is not None
    size, figures = run.plan.batch_size_px, {}
    for count in (1, 2, 4):
        bare_s, engine_s, latencies, bare_mem, engine_mem = [], [], [], [], []
        queued_s: list[float] = []
        await run.timed_bare(works(count, size, run.plan.steps))  # warm-up at this batch size
        for rep in range(run.plan.batch_reps):
            batch = works(count, size, run.plan.steps, first_seed=200 + 10 * rep)
            seconds, peak = await run.timed_bare(batch)
            bare_s.append(seconds)
            bare_mem.append(peak)
            seconds, peak, outcomes = await run.timed_engine(run.engine, batch)
            engine_s.append(seconds)
            engine_mem.append(peak)
            latencies += [o.finished_s for o in outcomes]
            blocker = works(1, size, run.plan.steps, first_seed=199)[0]
            queued_s.append((await batching_mod.queued(run.engine, blocker, batch))[0])
        bare, engine = report.summary(bare_s), report.summary(engine_s)
        figures[f"batch_{count}"] = {
            "bare_s_per_call": bare,
            "engine_s_all_jobs": engine,
            "bare_s_per_image": round(bare["median"] / count, 4),
            "engine_s_per_image": round(engine["median"] / count, 4),
            "engine_images_per_s": round(count / engine["median"], 3),
            "engine_job_latency_s": report.summary(latencies),
            "ratio": report.ratio(engine["median"], bare["median"]),
            "engine_queued_s_incl_blocker": report.summary(queued_s),
            "engine_queued_images_per_s": round((count + 1) / statistics.median(queued_s), 3),
            "bare_peak_extra_vram_bytes": max(bare_mem),
            "engine_peak_extra_vram_bytes": max(engine_mem),
        }
    figures["size_px"] = size
    return figures


async def option(run: Run, name: str) -> dict[str, Any]:
    """Engine with one speed option on vs the default engine, interleaved, at the first size."""
    assert run.engine is not None
    size = run.plan.sizes[0]
    side = engine_side(run, **{name: True})
    started = time.monotonic()
    await side.start()
    figures: dict[str, Any] = {"start_s": round(time.monotonic() - started, 2), "size_px": size}
    try:
        warm_s, _, _ = await run.timed_engine(side, works(1, size, run.plan.steps))
        figures["first_image_s_incl_warm_up"] = round(warm_s, 2)
        default_s, option_s = [], []
        for rep in range(run.plan.reps):
            batch = works(1, size, run.plan.steps, first_seed=300 + rep)
            default_s.append((await run.timed_engine(run.engine, batch))[0])
            option_s.append((await run.timed_engine(side, batch))[0])
        default, with_option = report.summary(default_s), report.summary(option_s)
        figures.update(default_engine_s=default, option_engine_s=with_option)
        figures["speedup"] = round(default["median"] / with_option["median"], 4)
        figures["option_it_per_s"] = round(run.plan.steps / with_option["median"], 2)
    finally:
        await side.close()
    return figures


def _short(figures: dict[str, Any]) -> str:
    keys = ("ratio", "speedup", "seconds", "unet_guided_step_s", "unet_fraction_of_floor", "error")
    picked = {k: figures[k] for k in keys if k in figures}
    return str(picked or {k: v for k, v in figures.items() if not isinstance(v, dict)})


if __name__ == "__main__":
    asyncio.run(main())
