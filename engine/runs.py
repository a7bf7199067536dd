"""One batch's life on a worker, and the end of every job, exactly once.

`BatchRunner` marks the jobs started, builds the plain batch on the loop (init images read off
it), runs it on the worker and maps the outcome: images saved (on the I/O thread, after the
worker is already free for the next batch), or failed with the reason, or cancelled, or left
for the next start when the engine closes. `JobEnds` is the one place a job ends: its row, the
table, the quota ledger and the event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.admission import Ledger
from engine.config import EngineSettings
from engine.errors import FailureKind, GenerationFailed, Interrupted, WorkerLost
from engine.estimates import Estimates
from engine.events import Cancelled, EventBus, Failed, Finished, Progress, Started
from engine.jobs import EndReason, Job, JobTable
from engine.models import ModelRegistry
from engine.offload import Offload
from engine.request import SEED_MAX, GenerationRequest, Kind
from engine.results import Finished as Saved
from engine.results import Results
from engine.store import ImageRecord, JobState, Store, StoreError
from engine.worker import Batch, BatchItem, BatchResult, GeneratedImage, Worker

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """What /status and /metrics count since start."""

    images_made: int = 0
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    degraded: dict[str, str] = field(default_factory=dict)


class JobEnds:
    """End jobs: the store row, the table, the ledger and the event, once per job."""

    def __init__(
        self,
        table: JobTable,
        bus: EventBus,
        offload: Offload,
        store: Store,
        ledger: Ledger,
        counters: Counters,
        clock: Callable[[], float],
    ) -> None:
        self.table = table
        self.bus = bus
        self.offload = offload
        self.store = store
        self.ledger = ledger
        self.counters = counters
        self.clock = clock
        self.on_requeue: Callable[[], None] = lambda: None

    def done(self, job: Job, records: list[ImageRecord], seconds: float) -> None:
        """End a job whose images and records are saved."""
        self.counters.images_made += len(records)
        self.ledger.forget(job.id)
        self._end(job, JobState.DONE, Finished(job.id, tuple(records), seconds))

    def fail(self, job: Job, reason: str, kind: FailureKind = FailureKind.OTHER) -> None:
        """End a job without images, with the reason."""
        if job.state.is_final:
            return
        self.counters.failures[str(kind)] += 1
        self.offload.spawn(self.store.finish_job, job.id, JobState.FAILED, self.clock(), reason)
        self.ledger.refund(job.id)
        self._end(job, JobState.FAILED, Failed(job.id, reason, str(kind)))

    def cancel(self, job: Job, by: str, is_written: bool = False) -> None:
        """End a job its requester or a moderator cancelled (`is_written`: its row already is)."""
        if job.state.is_final:
            return
        if not is_written:
            self.offload.spawn(
                self.store.finish_job,
                job.id,
                JobState.CANCELLED,
                self.clock(),
                f"cancelled by {by}",
            )
        self.ledger.refund(job.id)
        self._end(job, JobState.CANCELLED, Cancelled(job.id, by))

    def requeue(self, job: Job, reason: str, max_attempts: int) -> None:
        """Run a job again elsewhere (its worker was lost), or fail it past its attempts."""
        if job.state.is_final:
            return
        if job.attempt >= max_attempts:
            self.fail(
                job, f"{reason}; gave up after {job.attempt} attempts", FailureKind.WORKER_LOST
            )
            return
        self.offload.spawn(self.store.requeue_job, job.id)
        self.table.requeue(job)
        self.on_requeue()

    def leave_for_restart(self, job: Job) -> None:
        """Forget a running job the engine stopped for closing; it stays 'running' in the store,
        so the next start re-queues it (a bounded retry)."""
        self.table.finish(job)

    def _end(self, job: Job, state: JobState, event: Finished | Failed | Cancelled) -> None:
        if job.state.is_final:
            return
        self.table.finish(job)
        job.state = state
        self.bus.publish(event)


class _Progress:
    """The progress sink of one batch: steps to the jobs' events, previews only when watched."""

    def __init__(self, jobs: list[Job], bus: EventBus) -> None:
        self.jobs = jobs
        self.bus = bus

    def __call__(self, step: int, total: int, preview_png: bytes | None) -> None:
        for job in self.jobs:
            if job.state != JobState.RUNNING or job.stop is not None:
                continue
            job.step, job.total = step, total
            self.bus.publish(Progress(job.id, step, total, preview_png))

    def wants_preview(self) -> bool:
        return any(self.bus.is_watched(job.id) for job in self.jobs)

    def stopped(self) -> set[str]:
        return {job.id for job in self.jobs if job.stop is not None}


class BatchRunner:
    """Run one batch on one worker and end each of its jobs."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        offload: Offload,
        bus: EventBus,
        ends: JobEnds,
        estimates: Estimates,
        registry: ModelRegistry,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.offload = offload
        self.bus = bus
        self.ends = ends
        self.estimates = estimates
        self.registry = registry
        self.results = Results(store, clock)
        self.clock = clock

    async def run(self, worker: Worker, jobs: list[Job]) -> None:
        """Start, run and end a batch (its saving goes on after the worker is free)."""
        ids = [job.id for job in jobs]
        try:
            batch = await self._batch(jobs)
            await self.offload.run(
                self.store.mark_started, ids, self.clock(), worker.name, batch.id
            )
        except StoreError as error:
            self._fail(jobs, f"store error: {error}", FailureKind.STORE)
            return
        except GenerationFailed as error:
            self._fail(jobs, error.reason, error.kind)
            return
        for job in jobs:
            self.bus.publish(Started(job.id, worker.name))
        await self._outcome(worker, jobs, worker.run(batch, _Progress(jobs, self.bus)))

    async def resume(self, worker: Any, jobs: list[Job], task_id: str) -> None:
        """Follow a task a remote worker still runs for jobs from before the front restarted."""
        for job in jobs:
            self.bus.publish(Started(job.id, worker.name))
        runs = {job.id: f"{job.id}:{job.attempt}" for job in jobs}
        await self._outcome(worker, jobs, worker.resume(task_id, runs, _Progress(jobs, self.bus)))

    def save(self, jobs: list[Job], result: BatchResult) -> None:
        """Save a batch's images (on the I/O thread, in the background) and end its jobs."""
        for job, images in zip(jobs, result.images, strict=True):
            self.offload.track(asyncio.create_task(self._save(job, images, result)))

    async def _outcome(
        self, worker: Worker, jobs: list[Job], running: Awaitable[BatchResult]
    ) -> None:
        """Map what a worker's run ended with to the end of each job."""
        try:
            result = await running
        except Interrupted:
            self._stopped(jobs)
            return
        except GenerationFailed as error:
            self._fail(jobs, error.reason, error.kind)
            return
        except WorkerLost as error:
            log.warning("jobs %s: %s; running them again", [j.id for j in jobs], error)
            worker.cancel([job.id for job in jobs])  # if the box comes back, it stops them
            for job in jobs:
                self.ends.requeue(job, f"worker lost: {error.reason}", self.settings.max_attempts)
            return
        except Exception as error:
            log.exception("batch of %s failed on %s", jobs[0].id, worker.name)
            self._fail(jobs, f"internal error: {type(error).__name__}", FailureKind.INTERNAL)
            return
        self.estimates.learn(worker.name, jobs, result.seconds)
        self.registry.learn(result.facts)
        self.save(jobs, result)

    async def _batch(self, jobs: list[Job]) -> Batch:
        """Build the plain batch on the loop; init images are read on the I/O thread."""
        first = jobs[0].request
        items = []
        for job in jobs:
            request = job.request
            init = mask = None
            if request.kind in (Kind.VARIATION, Kind.UPSCALE):
                init = await self.offload.run(self._source_png, request)
            elif request.kind != Kind.TXT2IMG:
                init, mask = await self.offload.run(self.store.job_inputs, job.id)
                if init is None:
                    raise GenerationFailed(f"job {job.id} lost its input image")
            items.append(
                BatchItem(
                    job.id,
                    request.prompt,
                    request.negative_prompt,
                    seeds(request),
                    init,
                    mask,
                    attempt=job.attempt,
                )
            )
        strength = {
            Kind.VARIATION: self.settings.variation_strength,
            Kind.UPSCALE: self.settings.upscale_strength,
            Kind.IMG2IMG: float(first.strength or 0.6),
        }.get(first.kind, 1.0)
        return Batch(
            id=f"{jobs[0].id}:{jobs[0].attempt}",
            model=jobs[0].model,
            kind=str(first.kind),
            width=int(first.width or 0),
            height=int(first.height or 0),
            steps=int(first.steps or 0),
            guidance=float(first.guidance or 0.0),
            scheduler=str(first.scheduler),
            items=tuple(items),
            strength=strength,
            preview_every_steps=self.settings.preview_every_steps,
            loras=tuple((name, float(weight or 0.0)) for name, weight in first.loras),
        )

    def _source_png(self, request: GenerationRequest) -> bytes:
        """Return the stored source image of a variation or upscale (on the I/O thread)."""
        record = self.store.image(request.source_image_id or "")
        if record is None:
            raise GenerationFailed(f"source image {request.source_image_id} was deleted")
        try:
            return self.store.image_path(record.file_name).read_bytes()
        except OSError as error:
            raise GenerationFailed(f"source image {record.id} unreadable: {error}") from error

    def _stopped(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.stop == EndReason.SHUTDOWN:
                self.ends.leave_for_restart(job)
            elif job.stop == EndReason.TIMED_OUT:
                self.ends.fail(job, f"timed out after {self.settings.job_timeout_s:.0f} s")
            else:
                self.ends.cancel(job, job.stopped_by or "unknown")

    def _fail(self, jobs: list[Job], reason: str, kind: FailureKind) -> None:
        for job in jobs:
            if job.stop == EndReason.CANCELLED:
                self.ends.cancel(job, job.stopped_by or "unknown")
            elif job.stop == EndReason.SHUTDOWN:
                self.ends.leave_for_restart(job)
            else:
                self.ends.fail(job, reason, kind)

    async def _save(
        self, job: Job, images: tuple[GeneratedImage, ...], result: BatchResult
    ) -> None:
        if job.stop is not None:  # cancelled while the rest of its batch went on
            self._stopped([job])
            return
        # Images record the registry name: never a filesystem path (PNG, embed, gallery).
        saved = Saved(job.id, job.requester, job.request, job.model, result.facts, result.seconds)
        try:
            records = await self.offload.run(self.results.save, saved, images)
        except StoreError as error:
            self.ends.counters.degraded["storage"] = str(error)
            self.ends.fail(job, str(error), FailureKind.STORE)
            return
        except Exception as error:  # never leave a job running because its save broke
            log.exception("saving job %s failed", job.id)
            self.ends.fail(job, f"internal error: {type(error).__name__}", FailureKind.INTERNAL)
            return
        self.ends.counters.degraded.pop("storage", None)
        self.ends.done(job, records, result.seconds)


def seeds(request: GenerationRequest) -> tuple[int, ...]:
    """Return one seed per image: the request's seed, then the next ones."""
    first = int(request.seed or 0)
    return tuple((first + i) % (SEED_MAX + 1) for i in range(int(request.count or 1)))
