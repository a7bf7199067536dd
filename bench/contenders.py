"""The two sides of every comparison: bare diffusers, and the engine (submit → Finished).

Both load the same diffusers folder, use DPM++ 2M (DPMSolverMultistep, dpmsolver++, order 2),
the same prompts and one CPU generator per image seeded alike.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_LIMITS = {"max_per_user": 1000, "max_queue": 10_000, "min_size_px": 32}


@dataclass(frozen=True)
class Work:
    """One image to make."""

    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float = 7.0


def works(count: int, size_px: int, steps: int, first_seed: int = 1) -> list[Work]:
    """Return `count` distinct prompts and seeds of one size."""
    subjects = ("a red fox", "a lighthouse at dusk", "a bowl of ramen", "a snowy forest")
    return [
        Work(f"{subjects[i % len(subjects)]}, study {i}", first_seed + i, size_px, size_px, steps)
        for i in range(count)
    ]


def quiet() -> None:
    """Silence the libraries' loading progress bars and notices (not timed, only noise)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


class Bare:
    """Plain diffusers as a user writes it: from_pretrained, pipe(...), image.save(png)."""

    def __init__(
        self, folder: Path, device: str = "cpu", dtype: str = "float32", out_dir: Path | None = None
    ) -> None:
        import torch
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        quiet()
        self.torch = torch
        self.pipe = StableDiffusionPipeline.from_pretrained(
            str(folder),
            dtype=getattr(torch, dtype),
            safety_checker=None,
            requires_safety_checker=False,
            use_safetensors=True,
            local_files_only=True,
        )
        self.pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            self.pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.to(device)
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="bench-bare-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def generate(self, batch: list[Work]) -> list[Path]:
        """Make the images in one pipeline call and save each as PNG; return the paths."""
        first = batch[0]
        generators = [self.torch.Generator("cpu").manual_seed(w.seed) for w in batch]
        images = self.pipe(
            prompt=[w.prompt for w in batch],
            width=first.width,
            height=first.height,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            generator=generators,
        ).images
        paths = []
        for image in images:
            self._count += 1
            path = self.out_dir / f"bare-{self._count}.png"
            image.save(path)
            paths.append(path)
        return paths


@dataclass
class Outcome:
    """What following one engine job saw, in seconds from its submit."""

    job_id: str
    finished_s: float = 0.0
    first_progress_s: float | None = None
    first_preview_s: float | None = None
    state: str = ""
    image_files: list[Path] = field(default_factory=list)


class EngineSide:
    """The engine on its own asyncio loop: submit → Finished (PNG on disk, record committed)."""

    def __init__(self, folder: Path, data_dir: Path | None = None, **engine: Any) -> None:
        from engine.config import from_mapping

        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="bench-engine-"))
        raw = {"model": str(folder), "data_dir": str(self.data_dir), **engine}
        self.settings = from_mapping({"engine": raw, "limits": BENCH_LIMITS}, {})
        self.engine: Any = None
        self.retries = RetryCounter()

    async def start(self) -> None:
        """Load the model (on the engine's worker thread)."""
        from engine import Engine, Store

        quiet()
        logging.getLogger("engine.pipeline").addHandler(self.retries)
        self.engine = Engine(self.settings, Store(self.settings.engine.data_dir))
        await self.engine.start()

    async def close(self) -> None:
        """Stop the engine and drop the model."""
        if self.engine is not None:
            await self.engine.close(grace_s=5)
        logging.getLogger("engine.pipeline").removeHandler(self.retries)

    @property
    def pipe(self) -> Any:
        """Return the engine's diffusers pipeline (for instrumentation only)."""
        worker = self.engine.workers[0]
        return worker.pipeline(self.engine.registry.default_name).diffusers

    async def generate(self, batch: list[Work], user_prefix: str = "bench") -> list[Outcome]:
        """Submit every work item as its own job at once; follow all to their end."""
        from engine import GenerationRequest, Requester

        started = time.perf_counter()
        followers = []
        for index, work in enumerate(batch):
            request = GenerationRequest(
                prompt=work.prompt,
                width=work.width,
                height=work.height,
                steps=work.steps,
                guidance=work.guidance,
                seed=work.seed,
                count=1,
                scheduler="DPM++ 2M",
            )
            requester = Requester(source="web", user_id=f"{user_prefix}{index}")
            view = await self.engine.submit(request, requester)
            followers.append(asyncio.create_task(self._follow(view.id, started)))
        return list(await asyncio.gather(*followers))

    async def _follow(self, job_id: str, started: float) -> Outcome:
        from engine import Finished, Progress

        outcome = Outcome(job_id)
        async for event in self.engine.events(job_id):
            now = time.perf_counter() - started
            if isinstance(event, Progress):
                if outcome.first_progress_s is None:
                    outcome.first_progress_s = now
                if event.preview_png is not None and outcome.first_preview_s is None:
                    outcome.first_preview_s = now
            outcome.state = type(event).__name__
            if isinstance(event, Finished):
                store = self.engine.store
                outcome.image_files = [store.image_path(i.file_name) for i in event.images]
        outcome.finished_s = time.perf_counter() - started
        return outcome


class RetryCounter(logging.Handler):
    """Count the engine's NaN/OOM retries: a retried run is not a like-for-like comparison."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count one warning that announces a retry."""
        if "retrying" in record.getMessage():
            self.count += 1


def check_outcomes(outcomes: list[Outcome]) -> None:
    """Raise when a job did not finish with its PNG on disk."""
    for outcome in outcomes:
        if outcome.state != "Finished" or not all(p.exists() for p in outcome.image_files):
            raise RuntimeError(f"engine job {outcome.job_id} ended {outcome.state or 'silently'}")
