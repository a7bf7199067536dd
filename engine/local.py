"""A worker for one device in this process: one thread, its resident pipelines, its watchdog.

Each GPU is driven by exactly one thread (CUDA contexts and diffusers schedulers are not
thread-safe). The thread keeps at most `engine.resident_models` models loaded, least recently
used out first; img2img reuses the txt2img weights. Cancel is a flag per job, read in the step
callback; a batch past `engine.job_timeout_s` is stopped, and a thread stuck past
`engine.hang_grace_s` more is abandoned for a fresh one. torch is imported on that thread, at
start, never by `import engine`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import EngineSettings
from engine.errors import ConfigError, GenerationFailed, ModelUnavailable, WorkerTimedOut
from engine.models import ModelFacts, ModelRegistry, ModelSpec
from engine.worker import Batch, BatchResult, GeneratedImage, ProgressSink, WorkerInfo

if TYPE_CHECKING:
    from engine.pipeline import Pipeline

log = logging.getLogger(__name__)

AUTO_BATCH_CUDA = 4  # 3.4× the images per second at 512 px on an H200; no gain on a CPU


class LocalWorker:
    """Drive one device (`cpu`, `cuda:1`...) from its own thread."""

    kind = "local"

    def __init__(
        self,
        name: str,
        device: str,
        settings: EngineSettings,
        registry: ModelRegistry,
        data_dir: Path,
    ) -> None:
        self.name = name
        self.settings = settings
        self._wanted_device = device
        self._specs = {spec.name: spec for spec in registry.specs()}
        self._registry = registry  # its `loras` are read per batch, so a reload reaches here
        self._default = registry.default_name
        self._data_dir = Path(data_dir)
        self._pipelines: OrderedDict[str, Pipeline] = OrderedDict()  # touched on the thread only
        self._resident: tuple[str, ...] = ()  # a snapshot for info() from the loop
        self._facts: dict[str, ModelFacts] = {}
        self._problems: dict[str, str] = {}
        self._stops: dict[str, threading.Event] = {}
        self._executor = self._new_thread()
        self._device = device
        self._dtype = ""
        self._jobs_done = 0

    def _new_thread(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(1, thread_name_prefix=f"imagine-gpu-{self.name}")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> WorkerInfo:
        """Pick the device and load the default model (and more, up to resident_models)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._warm_up)
        return self.info()

    def _warm_up(self) -> None:
        from engine import pipeline as pipeline_mod

        if self.settings.threads:
            pipeline_mod.set_threads(self.settings.threads)
        self._device = pipeline_mod.pick_device(self._wanted_device)
        order = [self._default, *(n for n in self._specs if n != self._default)]
        for name in order[: self.settings.resident_models]:
            try:
                self._pipeline(name, is_starting=True)
            except ModelUnavailable as error:
                if name == self._default:
                    raise
                self._problems[name] = f"model {name} unavailable: {error.reason}"
                log.error("worker %s: %s", self.name, self._problems[name])

    async def close(self) -> None:
        """Stop the thread (after the batch it runs) and drop the models."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        await loop.run_in_executor(None, lambda: executor.shutdown(wait=True, cancel_futures=True))
        for pipeline in self._pipelines.values():
            pipeline.close()
        self._pipelines.clear()
        self._resident = ()

    def info(self) -> WorkerInfo:
        """Return the device, the models this worker serves and those it holds now."""
        models = tuple(name for name in self._specs if name not in self._problems)
        return WorkerInfo(
            name=self.name,
            device=self._device,
            dtype=self._dtype,
            models=models,
            resident=self._resident,
            max_batch=self.max_batch,
            facts=tuple(self._facts.values()),
            problems=tuple(self._problems.values()),
            jobs_done=self._jobs_done,
            kind=self.kind,
        )

    @property
    def max_batch(self) -> int:
        """Return how many jobs may share one call here (`engine.max_batch`, 0 = auto)."""
        if self.settings.max_batch:
            return self.settings.max_batch
        return AUTO_BATCH_CUDA if self._device.startswith("cuda") else 1

    def fail_all(self, reason: str) -> None:
        """Serve nothing, saying why (a box whose default model could not load)."""
        for name in self._specs:
            self._problems.setdefault(name, f"model {name}: {reason}")

    def pipeline(self, model: str) -> Pipeline:
        """Return a resident model's pipeline (tests and benchmarks instrument it)."""
        return self._pipelines[model]

    def served_loras(self) -> dict[str, tuple[str, ...]]:
        """Return this worker's LoRAs by name, with the models each fits (empty: every model)."""
        return {name: lora.models for name, lora in self._registry.loras.items()}

    # -- running ---------------------------------------------------------------------------

    async def run(self, batch: Batch, progress: ProgressSink) -> BatchResult:
        """Run a batch on this worker's thread, under the watchdog."""
        loop = asyncio.get_running_loop()
        stops = {job_id: threading.Event() for job_id in batch.job_ids}
        for job_id in progress.stopped():  # cancelled between the pick and now
            stops[job_id].set()
        self._stops.update(stops)
        timed_out = threading.Event()

        def should_stop() -> bool:
            return timed_out.is_set() or all(flag.is_set() for flag in stops.values())

        on_step = _step_reporter(loop, batch, progress)
        started = time.monotonic()
        future = loop.run_in_executor(self._executor, self._generate, batch, on_step, should_stop)
        # Read the outcome even when nobody awaits it any more (watchdog, closing).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            images, facts = await asyncio.wait_for(
                asyncio.shield(future), self.settings.job_timeout_s
            )
        except TimeoutError:
            timed_out.set()
            await self._after_timeout(future)
            raise WorkerTimedOut(self.settings.job_timeout_s) from None
        finally:
            for job_id in batch.job_ids:
                self._stops.pop(job_id, None)
        self._jobs_done += len(batch.items)
        return BatchResult(images, time.monotonic() - started, facts)

    def cancel(self, job_ids: Collection[str]) -> None:
        """Stop these jobs at the next step; a batch stops once all of its jobs are stopped."""
        for job_id in job_ids:
            flag = self._stops.get(job_id)
            if flag is not None:
                flag.set()

    async def _after_timeout(self, future: asyncio.Future[Any]) -> None:
        done, _ = await asyncio.wait({future}, timeout=self.settings.hang_grace_s)
        if done:
            return
        # The thread is stuck inside a step: abandon it and give this worker a fresh one.
        log.error(
            "worker %s: thread hung past %.0f s; starting a new thread",
            self.name,
            self.settings.job_timeout_s + self.settings.hang_grace_s,
        )
        self._problems["thread"] = "a worker thread hung and was replaced"
        self._executor = self._new_thread()

    def _generate(
        self, batch: Batch, on_step: Callable[..., None], should_stop: Callable[[], bool]
    ) -> tuple[tuple[tuple[GeneratedImage, ...], ...], ModelFacts]:
        """Run on the worker's thread: the batch's model (loaded if needed), then the call."""
        try:
            pipeline = self._pipeline(batch.model)
        except ModelUnavailable as error:
            self._problems[batch.model] = f"model {batch.model} unavailable: {error.reason}"
            raise GenerationFailed(self._problems[batch.model]) from error
        images = pipeline.run(batch, on_step, should_stop, self._registry.loras)
        return tuple(tuple(item) for item in images), pipeline.facts

    def _pipeline(self, name: str, is_starting: bool = False) -> Pipeline:
        """Return a loaded model, loading it (and evicting the least recently used) if needed."""
        pipeline = self._pipelines.get(name)
        if pipeline is not None:
            self._pipelines.move_to_end(name)
            return pipeline
        from engine.pipeline import Pipeline

        spec = self._spec(name)
        while len(self._pipelines) >= self.settings.resident_models:
            old_name, old = self._pipelines.popitem(last=False)
            log.info("worker %s: unloading model %s to load %s", self.name, old_name, name)
            old.close()
        pipeline = Pipeline(spec, self.settings, self._data_dir, self._device)
        self._facts[name] = pipeline.load()
        self._check_loras(pipeline, is_starting)
        self._dtype = pipeline.dtype_name
        self._pipelines[name] = pipeline
        self._resident = tuple(self._pipelines)
        self._problems.pop(name, None)
        return pipeline

    def _check_loras(self, pipeline: Pipeline, is_starting: bool) -> None:
        """Load each LoRA for this model onto it once (they stay cached); one that does not fit
        stops the start with its name, or, loaded later, fails only the jobs that ask for it."""
        from engine.loras import fits

        model = pipeline.spec.name
        for name, lora in self._registry.loras.items():
            if not fits(lora, model):
                continue
            reason = pipeline.check_lora(name, lora)
            if reason is None:
                continue
            if is_starting:
                raise ConfigError(f"loras.{name}", reason)
            log.error("worker %s: %s", self.name, reason)

    def _spec(self, name: str) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise GenerationFailed(f"worker {self.name} does not serve model {name}")
        return spec


def _step_reporter(
    loop: asyncio.AbstractEventLoop, batch: Batch, progress: ProgressSink
) -> Callable[[int, int, Callable[[], bytes] | None], None]:
    """Return the step callback for the worker's thread: hand each step to the loop."""
    every = max(1, batch.preview_every_steps)

    def report(step: int, total: int, make_preview: Callable[[], bytes] | None) -> None:
        preview = None
        is_due = make_preview is not None and step % every == 0 and step < total
        if is_due and progress.wants_preview():
            preview = make_preview()  # type: ignore[misc]
        loop.call_soon_threadsafe(progress, step, total, preview)

    return report


def local_workers(
    settings: EngineSettings, registry: ModelRegistry, data_dir: Path
) -> list[LocalWorker]:
    """Return one LocalWorker per device in `engine.devices` (default: `engine.device`)."""
    devices = settings.devices or (settings.device,)
    names = [f"local-{index}" for index in range(len(devices))] if len(devices) > 1 else ["local"]
    return [
        LocalWorker(name, device, settings, registry, data_dir)
        for name, device in zip(names, devices, strict=True)
    ]
