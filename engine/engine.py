"""The engine: validate, moderate, limit, persist and queue jobs; run them on one GPU thread.

Lives on one asyncio loop. GPU work happens on exactly one worker thread (a single-thread
executor) guarded by the engine's lock; PNG encoding and SQLite writes of results happen on a
second, I/O thread so the GPU thread moves on to the next batch at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import secrets
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from engine import limits as limits_mod
from engine import request as request_mod
from engine.config import Settings
from engine.errors import (
    Banned,
    Blocked,
    EngineError,
    Forbidden,
    GenerationFailed,
    InvalidRequest,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
)
from engine.events import (
    TERMINAL,
    Cancelled,
    Event,
    Failed,
    Finished,
    Progress,
    Queued,
    Started,
)
from engine.moderation import Moderator
from engine.pipeline import Batch, BatchItem, GeneratedImage, Interrupted, Pipeline
from engine.pngmeta import Parameters, encode_png
from engine.queue import FairQueue
from engine.request import GenerationRequest, Kind, Requester
from engine.store import ImageRecord, JobRecord, Store, StoreError

log = logging.getLogger(__name__)

DAY_S = 86400.0
IDEMPOTENCY_KEYS_KEPT = 10_000


@dataclass(eq=False)
class Job:
    """A queued or running job, in memory."""

    id: str
    seq: int
    requester: Requester
    request: GenerationRequest
    origin: dict[str, Any]
    created_at: float
    state: str = "queued"
    step: int = 0
    total: int = 0
    started_at: float | None = None
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    cancelled_by: str | None = None
    timed_out: bool = False

    @property
    def requester_key(self) -> str:
        """Return the key fairness and limits count by."""
        return self.requester.key


@dataclass(frozen=True)
class JobView:
    """A job as frontends see it."""

    id: str
    state: str
    requester: Requester
    request: GenerationRequest
    origin: dict[str, Any]
    created_at: float
    position: int | None = None
    eta_s: float | None = None
    step: int = 0
    total: int = 0
    error: str | None = None
    image_ids: tuple[str, ...] = ()
    seconds: float | None = None
    delivered_at: float | None = None
    delivery: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineStatus:
    """What /status and /healthz report."""

    model: str
    device: str
    dtype: str
    native_px: int
    is_ready: bool
    is_accepting: bool
    is_demo: bool
    is_builtin_noise: bool
    queue_length: int
    running_job_ids: tuple[str, ...]
    seconds_per_step: float | None
    images_made: int
    failures: dict[str, int]
    degraded: tuple[str, ...]


class Engine:
    """The shared core both frontends talk to."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Callable[[], float] = time.time,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        store.busy_timeout_s = settings.engine.busy_timeout_s
        self.clock = clock
        self.pipeline = pipeline or Pipeline(settings.engine, settings.data_path)
        self.moderator = Moderator(settings.moderation)
        self._queue: FairQueue[Job] = FairQueue()
        self._jobs: dict[str, Job] = {}
        self._by_key: OrderedDict[str, str] = OrderedDict()
        self._subscribers: dict[str, list[asyncio.Queue[Event]]] = defaultdict(list)
        self._last_submit: dict[str, float] = {}
        self._reserved_images: dict[str, int] = defaultdict(int)
        self._bans: dict[str, tuple[float | None, str]] = {}
        self._seq = 0
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._gpu = ThreadPoolExecutor(1, thread_name_prefix="imagine-gpu")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="imagine-io")
        self._worker: asyncio.Task[None] | None = None
        self._saves: set[asyncio.Task[None]] = set()
        self._is_ready = False
        self._is_accepting = False
        self._seconds_per_unit: float | None = None
        self._images_made = 0
        self._failures: dict[str, int] = defaultdict(int)
        self._degraded: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listeners: list[Callable[[Event], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the pipeline on the worker thread, resume queued jobs, start the worker."""
        self._loop = asyncio.get_running_loop()
        self.store.open()
        await self._loop.run_in_executor(self._gpu, self.pipeline.load)
        self._is_ready = True
        now = self.clock()
        requeued, failed = await self._in_io(
            self.store.requeue_interrupted, self.settings.engine.max_attempts, now
        )
        if requeued or failed:
            log.info("resumed after a stop: %d requeued, %d failed", len(requeued), len(failed))
        self._resume(self.store.jobs_in_state("queued"))
        self._last_submit = self.store.last_submit_at()
        self._bans = {b.user_key: (b.until, b.reason) for b in self.store.bans()}
        self._is_accepting = True
        self._worker = asyncio.create_task(self._work_loop(), name="imagine-worker")

    def _resume(self, records: list[JobRecord]) -> None:
        for record in records:
            job = Job(
                id=record.id,
                seq=record.seq,
                requester=Requester.from_dict(record.requester),
                request=GenerationRequest.from_dict(record.request),
                origin=record.origin,
                created_at=record.created_at,
            )
            self._jobs[job.id] = job
            self._queue.push(job)
            self._seq = max(self._seq, record.seq)
        if records:
            self._wakeup.set()

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; let the running job finish for grace_s, else re-queue it."""
        self._is_accepting = False
        running = [job for job in self._jobs.values() if job.state == "running"]
        if running and self._lock.locked():
            deadline = time.monotonic() + grace_s
            while self._lock.locked() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for job in running:
                if job.state == "running":
                    job.cancelled_by = "shutdown"
                    job.cancel_flag.set()
        if self._worker is not None:
            self._worker.cancel()
            with _suppress_cancel():
                await self._worker
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)
        self._gpu.shutdown(wait=True, cancel_futures=True)
        self._io.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(None, self.pipeline.close)
        self.store.close()

    def reload(self, settings: Settings) -> None:
        """Swap in new settings (limits, moderation, frontends); model settings need a restart."""
        if settings.engine != self.settings.engine:
            log.warning("engine settings changed; they take effect after a restart")
            settings = dataclasses.replace(settings, engine=self.settings.engine)
        self.settings = settings
        self.moderator = Moderator(settings.moderation)

    # -- submitting ------------------------------------------------------------------------

    async def submit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Validate, moderate, apply limits and persist a job; return it once it is durable."""
        if not self._is_accepting:
            raise ShuttingDown()
        existing = self._existing(idempotency_key)
        if existing is not None:
            return existing
        self._check_ban(requester)
        self.moderator.check_channel(requester)
        limits = limits_mod.effective(self.settings.limits, requester)
        resolved = self._resolve(request, limits)
        self._moderate(resolved, requester)
        self._check_capacity(requester, limits)
        self._check_rate(requester, limits, int(resolved.count or 1))
        job = self._reserve(resolved, requester, origin or {})
        try:
            record = await self._in_io(
                self.store.insert_job,
                job.id,
                requester.key,
                requester.to_dict(),
                resolved.to_dict(),
                job.origin,
                idempotency_key,
                job.created_at,
            )
        except BaseException:
            self._jobs.pop(job.id, None)
            raise
        finally:
            self._reserved_images[requester.key] -= int(resolved.count or 1)
        if record.id != job.id:
            self._jobs.pop(job.id, None)
            return self.job(record.id)
        job.seq = record.seq
        self._seq = max(self._seq, record.seq)
        if idempotency_key:
            self._remember_key(idempotency_key, job.id)
        self._queue.push(job)
        self._wakeup.set()
        self._publish_positions()
        return self.job(job.id)

    def _existing(self, idempotency_key: str | None) -> JobView | None:
        # Memory only: the store's insert checks the key again, atomically, off the loop.
        if not idempotency_key:
            return None
        job_id = self._by_key.get(idempotency_key)
        return None if job_id is None else self.job(job_id)

    def _remember_key(self, idempotency_key: str, job_id: str) -> None:
        self._by_key[idempotency_key] = job_id
        while len(self._by_key) > IDEMPOTENCY_KEYS_KEPT:
            self._by_key.popitem(last=False)

    def _check_ban(self, requester: Requester) -> None:
        ban = self._bans.get(requester.key)
        if ban is None:
            return
        until, reason = ban
        if until is not None and until <= self.clock():
            return
        raise Banned(until=until, reason=reason)

    def _resolve(self, request: GenerationRequest, limits: Any) -> GenerationRequest:
        native = self.pipeline.native_px
        if request.kind != Kind.TXT2IMG:
            request = self._derive_from_source(request, limits)
        return request_mod.resolve(request, limits, native, self.settings.engine.default_scheduler)

    def _derive_from_source(self, request: GenerationRequest, limits: Any) -> GenerationRequest:
        if not request.source_image_id:
            raise InvalidRequest("source_image_id", f"required for a {request.kind}")
        source = self.store.image(request.source_image_id)
        if source is None:
            raise NotFound("image", request.source_image_id)
        width, height = source.width, source.height
        if request.kind == Kind.UPSCALE:
            width, height = upscale_size(source.width, source.height, limits)
        return dataclasses.replace(
            request,
            prompt=request.prompt or source.prompt,
            negative_prompt=request.negative_prompt or source.negative_prompt,
            width=width,
            height=height,
            steps=request.steps or source.steps,
            guidance=source.guidance if request.guidance is None else request.guidance,
            scheduler=request.scheduler or source.scheduler,
            seed=source.seed
            if request.kind == Kind.UPSCALE and request.seed is None
            else request.seed,
        )

    def _moderate(self, request: GenerationRequest, requester: Requester) -> None:
        try:
            self.moderator.check_prompt(request.prompt, requester)
        except Blocked as blocked:
            self._failures[f"blocked:{blocked.rule}"] += 1
            self._audit_later(
                "rejected",
                requester.key,
                rule=blocked.rule,
                prompt=request.prompt,
                detail=blocked.term,
            )
            raise

    def _check_capacity(self, requester: Requester, limits: Any) -> None:
        active = len(self._jobs)
        if active >= limits.max_queue:
            retry = self._running_remaining_s() or self._first_estimate_s()
            raise QueueFull(active, limits.max_queue, retry_after_s=_at_least_1s(retry))
        mine = [job for job in self._jobs.values() if job.requester_key == requester.key]
        if len(mine) >= limits.max_per_user:
            raise QueueFull(
                len(mine),
                limits.max_per_user,
                is_per_requester=True,
                retry_after_s=_at_least_1s(self._first_done_s(mine)),
            )

    def _first_estimate_s(self) -> float:
        order = self._queue.order()
        return self._estimate_s(order[0].request) if order else 0.0

    def _first_done_s(self, jobs: list[Job]) -> float:
        """Estimate when the first of these jobs ends (a slot frees up)."""
        if any(job.state == "running" for job in jobs):
            return self._running_remaining_s()
        first = min(jobs, key=lambda job: job.seq, default=None)
        if first is None:
            return 0.0
        view = self._view_of_job(first)
        return (view.eta_s or 0.0) + self._estimate_s(first.request)

    def _check_rate(self, requester: Requester, limits: Any, count: int) -> None:
        now = self.clock()
        last = self._last_submit.get(requester.key)
        if last is not None and limits.cooldown_s > 0 and now - last < limits.cooldown_s:
            raise RateLimited(retry_after_s=round(limits.cooldown_s - (now - last), 1))
        if limits.daily_quota <= 0:
            return
        used_rows = self.store.images_requested_since(requester.key, now - DAY_S)
        used = sum(c for _, c in used_rows) + self._reserved_images[requester.key]
        if used + count > limits.daily_quota:
            oldest = used_rows[0][0] if used_rows else now
            raise QuotaExceeded(
                used=used, limit=limits.daily_quota, resets_in_s=oldest + DAY_S - now
            )

    def _reserve(
        self, request: GenerationRequest, requester: Requester, origin: dict[str, Any]
    ) -> Job:
        now = self.clock()
        self._seq += 1
        job = Job(
            id=new_id(),
            seq=self._seq,
            requester=requester,
            request=request,
            origin=origin,
            created_at=now,
        )
        self._jobs[job.id] = job
        self._last_submit[requester.key] = now
        self._reserved_images[requester.key] += int(request.count or 1)
        return job

    # -- following and cancelling ----------------------------------------------------------

    def job(self, job_id: str) -> JobView:
        """Return a job's current state; raise NotFound."""
        job = self._jobs.get(job_id)
        if job is not None:
            return self._view_of_job(job)
        record = self.store.job(job_id)
        if record is None:
            raise NotFound("job", job_id)
        return self._view_of_record(record)

    def jobs(self, requester_key: str | None = None) -> list[JobView]:
        """Return active jobs (running first, then waiting in run order)."""
        running = [j for j in self._jobs.values() if j.state == "running"]
        waiting = self._queue.order()
        views = [self._view_of_job(j) for j in [*running, *waiting]]
        if requester_key is None:
            return views
        return [v for v in views if v.requester.key == requester_key]

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        """Yield a job's events from its current state to its end."""
        job = self._jobs.get(job_id)
        if job is None:
            yield self._terminal_event(job_id)
            return
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers[job_id].append(inbox)
        try:
            yield self._current_event(job)
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, TERMINAL):
                    return
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None and inbox in subscribers:
                subscribers.remove(inbox)
                if not subscribers:
                    del self._subscribers[job_id]

    async def cancel(self, job_id: str, by: Requester) -> JobView:
        """Cancel a waiting or running job: its requester's, or anyone's for a moderator."""
        job = self._jobs.get(job_id)
        if job is None:
            return self.job(job_id)
        is_moderator = self.moderator.is_moderator(by)
        if by.key != job.requester_key and not is_moderator:
            raise Forbidden("cancel someone else's job")
        if by.key != job.requester_key:
            self._audit_later("mod_cancel", by.key, target=job.id, prompt=job.request.prompt)
        if job.state == "running":
            job.cancelled_by = by.key
            job.cancel_flag.set()
            return self._view_of_job(job)
        self._queue.remove(job.id)
        await self._in_io(
            self.store.finish_job, job.id, "cancelled", self.clock(), f"cancelled by {by.key}"
        )
        self._end(job, "cancelled", Cancelled(job.id, by.key))
        self._publish_positions()
        return self.job(job_id)

    # -- the worker ------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._max_batch() > 1:
                # A burst arrives over a few ms: wait for it so it runs as one call, not 1 + 3.
                await asyncio.sleep(self.settings.engine.batch_window_s)
            self._wakeup.clear()
            while self._is_accepting:
                async with self._lock:
                    jobs = self._queue.take(self._max_batch(), _compatible)
                    if not jobs:
                        break
                    self._publish_positions()
                    await self._run(jobs)

    def _max_batch(self) -> int:
        configured = self.settings.engine.max_batch
        if configured:
            return configured
        # auto: batching pays on a GPU (3.4× images/s for 4 at 512 px on an H200), not on a CPU.
        return 4 if self.pipeline.device.startswith("cuda") else 1

    async def _run(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        now = self.clock()
        for job in jobs:  # running in memory at once, so no listing ever misses the job
            job.state, job.started_at = "running", now
        try:
            await self._in_io(self.store.mark_started, [j.id for j in jobs], now)
        except StoreError as error:
            self._fail_all(jobs, f"store error: {error}")
            return
        for job in jobs:
            self._publish(job.id, Started(job.id))
        started = time.monotonic()
        future = loop.run_in_executor(self._gpu, self._generate, jobs)
        # Read the result even when nobody awaits it any more (closing, watchdog).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        timeout = self.settings.engine.job_timeout_s
        try:
            results = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            await self._on_timeout(jobs, future)
            return
        except Interrupted:
            self._end_interrupted(jobs)
            return
        except GenerationFailed as error:
            self._fail_all(jobs, error.reason)
            return
        except Exception as error:
            log.exception("generation failed for jobs %s", [j.id for j in jobs])
            self._fail_all(jobs, f"internal error: {type(error).__name__}")
            return
        seconds = time.monotonic() - started
        self._learn_speed(jobs, seconds)
        task = asyncio.create_task(self._save_all(jobs, results, seconds))
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    def _generate(self, jobs: list[Job]) -> list[list[GeneratedImage]]:
        """Run on the GPU thread: build the batch and call the pipeline."""
        first = jobs[0].request
        items = []
        for job in jobs:
            req = job.request
            seeds = tuple(
                (int(req.seed or 0) + i) % (request_mod.SEED_MAX + 1) for i in range(req.count or 1)
            )
            init = self._init_image(req) if req.kind != Kind.TXT2IMG else None
            items.append(BatchItem(job.id, req.prompt, req.negative_prompt, seeds, init))
        strength = {
            Kind.VARIATION: self.settings.engine.variation_strength,
            Kind.UPSCALE: self.settings.engine.upscale_strength,
        }.get(first.kind, 1.0)
        batch = Batch(
            kind=str(first.kind),
            width=int(first.width or 0),
            height=int(first.height or 0),
            steps=int(first.steps or 0),
            guidance=float(first.guidance or 0.0),
            scheduler=str(first.scheduler),
            items=tuple(items),
            strength=strength,
        )
        return self.pipeline.run(batch, self._step_reporter(jobs), lambda: _should_stop(jobs))

    def _init_image(self, request: GenerationRequest) -> Image.Image:
        record = self.store.image(request.source_image_id or "")
        if record is None:
            raise GenerationFailed(f"source image {request.source_image_id} was deleted")
        with Image.open(self.store.image_path(record.file_name)) as image:
            return image.convert("RGB")

    def _step_reporter(self, jobs: list[Job]) -> Callable[[int, int, Any], None]:
        every = self.settings.engine.preview_every_steps

        def report(step: int, total: int, make_preview: Callable[[], Image.Image] | None) -> None:
            preview = None
            wants_preview = make_preview is not None and (step % every == 0 and step < total)
            if wants_preview and any(self._subscribers.get(j.id) for j in jobs):
                preview = _png(make_preview())  # type: ignore[misc]
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._on_progress, jobs, step, total, preview)

        return report

    def _on_progress(self, jobs: list[Job], step: int, total: int, preview: bytes | None) -> None:
        for job in jobs:
            if job.state != "running":
                continue
            job.step, job.total = step, total
            self._publish(job.id, Progress(job.id, step, total, preview))

    async def _on_timeout(self, jobs: list[Job], future: asyncio.Future[Any]) -> None:
        timeout = self.settings.engine.job_timeout_s
        for job in jobs:
            job.timed_out = True
            job.cancel_flag.set()
        grace = self.settings.engine.hang_grace_s
        done, _ = await asyncio.wait({future}, timeout=grace)
        if not done:
            # The thread is stuck inside a step: abandon it and give the engine a fresh one.
            log.error(
                "worker thread hung past %.0f s; starting a new worker thread", timeout + grace
            )
            self._degraded["worker"] = "a worker thread hung and was replaced"
            self._gpu = ThreadPoolExecutor(1, thread_name_prefix="imagine-gpu")
        self._fail_all(jobs, f"timed out after {timeout:.0f} s")

    def _end_interrupted(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.cancelled_by == "shutdown":
                self._requeue_for_restart(job)
            elif job.timed_out:
                self._fail_all([job], f"timed out after {self.settings.engine.job_timeout_s:.0f} s")
            else:
                self._cancel_running(job)

    def _requeue_for_restart(self, job: Job) -> None:
        # Left 'running' in the store: the next start re-queues it (a bounded retry).
        self._queue.done(job)
        self._jobs.pop(job.id, None)

    def _cancel_running(self, job: Job) -> None:
        by = job.cancelled_by or "unknown"
        self._spawn_io(
            self.store.finish_job, job.id, "cancelled", self.clock(), f"cancelled by {by}"
        )
        self._end(job, "cancelled", Cancelled(job.id, by))

    def _fail_all(self, jobs: list[Job], reason: str) -> None:
        for job in jobs:
            if job.cancelled_by and job.cancelled_by != "shutdown" and not job.timed_out:
                self._cancel_running(job)
                continue
            self._failures[_reason_kind(reason)] += 1
            self._spawn_io(self.store.finish_job, job.id, "failed", self.clock(), reason)
            self._end(job, "failed", Failed(job.id, reason))

    async def _save_all(
        self, jobs: list[Job], results: list[list[GeneratedImage]], seconds: float
    ) -> None:
        for job, images in zip(jobs, results, strict=True):
            if job.cancelled_by and job.cancelled_by != "shutdown":
                self._cancel_running(job)
                continue
            try:
                records = await self._in_io(self._save_job, job, images, seconds)
            except StoreError as error:
                self._degraded["storage"] = str(error)
                self._failures["storage"] += 1
                self._spawn_io(self.store.finish_job, job.id, "failed", self.clock(), str(error))
                self._end(job, "failed", Failed(job.id, str(error)))
                continue
            self._degraded.pop("storage", None)
            self._images_made += len(records)
            self._end(job, "done", Finished(job.id, tuple(records), seconds))

    def _save_job(
        self, job: Job, images: list[GeneratedImage], seconds: float
    ) -> list[ImageRecord]:
        """Run on the I/O thread: PNG files first, then every record in one transaction."""
        records = [
            self._image_record(job, index, image, seconds) for index, image in enumerate(images)
        ]
        written = []
        try:
            for record, image in zip(records, images, strict=True):
                data = encode_png(image.image, self._parameters(job, record))
                written.append(self.store.write_image_file(record.file_name, data))
            self.store.finish_job(job.id, "done", self.clock(), seconds=seconds, images=records)
        except StoreError:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return self.store.images_of_job(job.id)

    def _image_record(
        self, job: Job, index: int, image: GeneratedImage, seconds: float
    ) -> ImageRecord:
        req, who = job.request, job.requester
        image_id = f"{job.id}-{index}"
        return ImageRecord(
            id=image_id,
            job_id=job.id,
            idx=index,
            seed=(int(req.seed or 0) + index) % (request_mod.SEED_MAX + 1),
            width=image.image.width,
            height=image.image.height,
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            steps=int(req.steps or 0),
            guidance=float(req.guidance or 0),
            scheduler=str(req.scheduler),
            model=self.pipeline.model_name,
            kind=str(req.kind),
            parent_image_id=req.source_image_id,
            source=who.source,
            author_id=who.user_id,
            author_name=who.name,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            is_nsfw_channel=who.is_nsfw_channel,
            is_flagged=bool(image.is_flagged),
            seconds=round(seconds, 3),
            created_at=self.clock(),
            file_name=f"{image_id}.png",
        )

    def _parameters(self, job: Job, record: ImageRecord) -> Parameters:
        extra = [("Job", job.id)]
        if record.kind != "txt2img":
            extra += [("Kind", record.kind), ("Source image", record.parent_image_id or "")]
        return Parameters(
            prompt=record.prompt,
            negative_prompt=record.negative_prompt,
            steps=record.steps,
            sampler=record.scheduler,
            cfg_scale=record.guidance,
            seed=record.seed,
            width=record.width,
            height=record.height,
            model=record.model,
            extra=tuple(extra),
        )

    # -- publishing ------------------------------------------------------------------------

    def _end(self, job: Job, state: str, event: Event) -> None:
        if job.state in ("done", "failed", "cancelled"):
            return
        if job.state == "running":
            self._queue.done(job)
        job.state = state
        self._publish(job.id, event)
        self._jobs.pop(job.id, None)

    def _publish(self, job_id: str, event: Event) -> None:
        for inbox in self._subscribers.get(job_id, []):
            inbox.put_nowait(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    def _publish_positions(self) -> None:
        if not self._subscribers:
            return
        eta = self._running_remaining_s()
        for position, job in enumerate(self._queue.order(), start=1):
            if self._subscribers.get(job.id):
                self._publish(job.id, Queued(job.id, position, round(eta, 1)))
            eta += self._estimate_s(job.request)

    def _current_event(self, job: Job) -> Event:
        if job.state == "running":
            if job.step:
                return Progress(job.id, job.step, job.total, None)
            return Started(job.id)
        view = self._view_of_job(job)
        return Queued(job.id, view.position or 0, view.eta_s or 0.0)

    def _terminal_event(self, job_id: str) -> Event:
        record = self.store.job(job_id)
        if record is None:
            raise NotFound("job", job_id)
        if record.state == "done":
            images = tuple(self.store.images_of_job(job_id))
            return Finished(job_id, images, record.seconds or 0.0)
        if record.state == "cancelled":
            return Cancelled(job_id, (record.error or "").removeprefix("cancelled by "))
        return Failed(job_id, record.error or "interrupted")

    # -- views, estimates, status ----------------------------------------------------------

    def _view_of_job(self, job: Job) -> JobView:
        position = eta = None
        if job.state == "queued":
            order = self._queue.order()
            eta = self._running_remaining_s()
            for index, other in enumerate(order, start=1):
                if other.id == job.id:
                    position = index
                    break
                eta += self._estimate_s(other.request)
        return JobView(
            id=job.id,
            state=job.state,
            requester=job.requester,
            request=job.request,
            origin=job.origin,
            created_at=job.created_at,
            position=position,
            eta_s=None if eta is None else round(eta, 1),
            step=job.step,
            total=job.total,
        )

    def _view_of_record(self, record: JobRecord) -> JobView:
        images = self.store.images_of_job(record.id) if record.state == "done" else []
        return JobView(
            id=record.id,
            state=record.state,
            requester=Requester.from_dict(record.requester),
            request=GenerationRequest.from_dict(record.request),
            origin=record.origin,
            created_at=record.created_at,
            error=record.error,
            image_ids=tuple(image.id for image in images),
            seconds=record.seconds,
            delivered_at=record.delivered_at,
            delivery=record.delivery,
        )

    def _estimate_s(self, request: GenerationRequest) -> float:
        per_unit = self._seconds_per_unit if self._seconds_per_unit is not None else 1e-6
        return per_unit * _work_units(request)

    def _running_remaining_s(self) -> float:
        remaining = 0.0
        for job in self._jobs.values():
            if job.state == "running":
                done = job.step / job.total if job.total else 0.0
                remaining = max(remaining, self._estimate_s(job.request) * (1 - done))
        return remaining

    def _learn_speed(self, jobs: list[Job], seconds: float) -> None:
        units = sum(_work_units(job.request) for job in jobs)
        if units <= 0:
            return
        sample = seconds / units
        previous = self._seconds_per_unit
        self._seconds_per_unit = sample if previous is None else 0.7 * previous + 0.3 * sample

    def status(self) -> EngineStatus:
        """Return model, device, queue and recent speed."""
        pipe = self.pipeline
        per_step = None
        if self._seconds_per_unit is not None and self._is_ready:
            per_step = self._seconds_per_unit * pipe.native_px * pipe.native_px
        return EngineStatus(
            model=pipe.model_name,
            device=pipe.device,
            dtype=pipe.dtype_name,
            native_px=pipe.native_px if self._is_ready else 0,
            is_ready=self._is_ready,
            is_accepting=self._is_accepting,
            is_demo=pipe.is_demo,
            is_builtin_noise=pipe.is_builtin_noise,
            queue_length=len(self._queue),
            running_job_ids=tuple(j.id for j in self._jobs.values() if j.state == "running"),
            seconds_per_step=per_step,
            images_made=self._images_made,
            failures=dict(self._failures),
            degraded=tuple(self._degraded.values()),
        )

    # -- records frontends need ------------------------------------------------------------

    def reroll_request(self, job_id: str) -> GenerationRequest:
        """Return a job's request with a new random seed."""
        request = self.job(job_id).request
        return dataclasses.replace(request, seed=None)

    def variation_request(self, image_id: str) -> GenerationRequest:
        """Return a request for a variation (img2img) of a stored image."""
        self._image_or_raise(image_id)
        return GenerationRequest(prompt="", kind=Kind.VARIATION, source_image_id=image_id)

    def upscale_request(self, image_id: str) -> GenerationRequest:
        """Return a request for a 2× upscale of a stored image (capped by the size limits)."""
        self._image_or_raise(image_id)
        return GenerationRequest(prompt="", kind=Kind.UPSCALE, source_image_id=image_id)

    def _image_or_raise(self, image_id: str) -> ImageRecord:
        record = self.store.image(image_id)
        if record is None:
            raise NotFound("image", image_id)
        return record

    async def delete_image(self, image_id: str, by: Requester) -> None:
        """Delete an image: its author's, or anyone's for a moderator."""
        record = self._image_or_raise(image_id)
        is_author = by.source == record.source and by.user_id == record.author_id
        if not is_author and not self.moderator.is_moderator(by):
            raise Forbidden("delete someone else's image")
        await self._in_io(self.store.delete_image, image_id)
        if not is_author:
            await self._in_io(
                self.store.add_audit,
                "mod_delete",
                by.key,
                self.clock(),
                image_id,
                "",
                record.prompt,
            )

    async def ban(self, user_key: str, until: float | None, reason: str, by: Requester) -> None:
        """Ban a requester key (e.g. `discord:1234`) until a time, or forever."""
        if not self.moderator.is_moderator(by):
            raise Forbidden("ban")
        now = self.clock()
        await self._in_io(self.store.set_ban, user_key, until, reason, by.key, now)
        await self._in_io(self.store.add_audit, "mod_ban", by.key, now, user_key, "", "", reason)
        self._bans[user_key] = (until, reason)

    async def unban(self, user_key: str, by: Requester) -> bool:
        """Lift a ban; False when there was none."""
        if not self.moderator.is_moderator(by):
            raise Forbidden("unban")
        removed = await self._in_io(self.store.remove_ban, user_key)
        await self._in_io(self.store.add_audit, "mod_unban", by.key, self.clock(), user_key)
        self._bans.pop(user_key, None)
        return bool(removed)

    async def mark_delivered(self, job_id: str, delivery: dict[str, Any]) -> bool:
        """Record a frontend's delivery of a job; False when it was already delivered."""
        return bool(await self._in_io(self.store.mark_delivered, job_id, delivery, self.clock()))

    async def update_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Keep a frontend's delivery notes on a job (message ids, attempts)."""
        await self._in_io(self.store.update_delivery, job_id, delivery)

    def undelivered(self, source: str) -> list[JobView]:
        """Return a frontend's finished jobs that still await delivery (after a restart)."""
        return [self._view_of_record(record) for record in self.store.undelivered(source)]

    # -- helpers ---------------------------------------------------------------------------

    async def _in_io(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)

    def _spawn_io(self, function: Callable[..., Any], *args: Any) -> None:
        async def run() -> None:
            try:
                await self._in_io(function, *args)
            except (StoreError, RuntimeError) as error:
                log.error("store write failed: %s", error)

        task = asyncio.create_task(run())
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    def _audit_later(self, action: str, actor: str, **fields: str) -> None:
        self._spawn_io(
            self.store.add_audit,
            action,
            actor,
            self.clock(),
            fields.get("target", ""),
            fields.get("rule", ""),
            fields.get("prompt", ""),
            fields.get("detail", ""),
        )


def new_id() -> str:
    """Return a short, URL-safe, unguessable id."""
    return secrets.token_hex(6)


def upscale_size(width: int, height: int, limits: Any) -> tuple[int, int]:
    """Return 2× the size, shrunk to fit max_size_px and max_pixels (multiples of 8)."""
    scale = 2.0
    scale = min(scale, limits.max_size_px / max(width, height))
    scale = min(scale, (limits.max_pixels / (width * height)) ** 0.5)
    new_width, new_height = int(width * scale) // 8 * 8, int(height * scale) // 8 * 8
    if new_width <= width or new_height <= height:
        raise InvalidRequest(
            "source_image_id",
            f"already at the largest size allowed ({limits.max_size_px} px, "
            f"{limits.max_pixels} pixels)",
        )
    return new_width, new_height


def _compatible(first: Job, other: Job) -> bool:
    return first.request.kind == Kind.TXT2IMG and other.request.batch_key == first.request.batch_key


def _at_least_1s(seconds: float) -> float:
    return max(1.0, round(seconds, 1))


def _should_stop(jobs: list[Job]) -> bool:
    return all(job.cancel_flag.is_set() for job in jobs)


def _work_units(request: GenerationRequest) -> float:
    return float(
        (request.width or 0) * (request.height or 0) * (request.steps or 0) * (request.count or 1)
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _reason_kind(reason: str) -> str:
    lowered = reason.lower()
    for kind in ("out of memory", "timed out", "nan", "store", "internal"):
        if kind in lowered:
            return kind.replace(" ", "_")
    return "other"


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        return kind is asyncio.CancelledError


__all__ = ["Engine", "EngineError", "EngineStatus", "JobView"]
