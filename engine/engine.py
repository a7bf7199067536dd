"""The engine: the one API both frontends use, over small services on one asyncio loop.

    submit ─► admission ─► store (jobs) ─► scheduler ──► Worker ──► LocalWorker (a thread per GPU)
                                               ▲ fair pick,  │ run(batch, progress)
    events ◄── event bus ◄── runs / results ◄──┘ affinity    ▼ PNG data + facts

- `admission` decides from memory whether a request becomes a job (no SQL on the loop);
  `jobs` holds the active jobs and their fair order; `scheduler` hands batches to free
  workers; `runs` starts, runs and ends each batch; `results` writes PNGs and records on the
  I/O thread (`offload`); `events` carries Queued → Started → Progress → Finished | Failed |
  Cancelled; `models` is the registry; `library` is what frontends read (from any thread).
- A `Worker` (worker.py) is the only thing the scheduler talks to; only `LocalWorker` and
  `pipeline.py` import torch, so `import engine` never does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from engine import limits as limits_mod
from engine.admission import DAY_S, Admission
from engine.bans import Bans
from engine.config import Settings
from engine.derive import Derivations
from engine.errors import Blocked, Forbidden, NotFound, ShuttingDown
from engine.estimates import Estimates
from engine.events import Cancelled, Event, EventBus, Failed, Finished, Listener
from engine.jobs import EndReason, Job, JobTable, JobView
from engine.library import Library
from engine.local import local_workers
from engine.models import ModelRegistry, inspect
from engine.offload import Offload
from engine.request import GenerationRequest, Kind, Requester
from engine.runs import BatchRunner, Counters, JobEnds
from engine.scheduler import Scheduler
from engine.status import EngineStatus, report
from engine.store import JobState, Store
from engine.views import Views
from engine.worker import Worker

log = logging.getLogger(__name__)

IDEMPOTENCY_KEYS_KEPT = 10_000
Pending = asyncio.Future[JobView]


class Engine:
    """The shared core: submit, follow, cancel; status; moderator actions; delivery marks."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Callable[[], float] = time.time,
        workers: Sequence[Worker] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        store.busy_timeout_s = settings.engine.busy_timeout_s
        self.clock = clock
        self.registry = ModelRegistry.from_settings(settings)
        self.workers: list[Worker] = list(
            workers
            if workers is not None
            else local_workers(settings.engine, self.registry, settings.data_path)
        )
        self.offload = Offload()
        self.bus = EventBus()
        self.table = JobTable()
        self.estimates = Estimates()
        self.counters = Counters()
        self.library = Library(store, clock)
        self.bans = Bans(store, self.offload, clock)
        self.admission = Admission(
            settings, self.table, self.registry, self.bans, self.estimates, self._is_served, clock
        )
        self.admission.on_blocked = self._audit_blocked
        self.ends = JobEnds(
            self.table, self.bus, self.offload, store, self.admission.ledger, self.counters, clock
        )
        self.runner = BatchRunner(
            settings.engine, store, self.offload, self.bus, self.ends, self.estimates,
            self.registry, clock,
        )  # fmt: skip
        self.scheduler = Scheduler(
            self.table, self.workers, settings.engine, self.runner.run, clock
        )
        self.views = Views(self.table, self.estimates, self.bus, lambda: len(self.workers))
        self.derivations = Derivations(self.library, self.registry, self.offload)
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._pending: dict[str, Pending] = {}
        self._is_ready = False
        self._is_accepting = False

    @property
    def moderator(self) -> Any:
        """Return the moderation rules in force (Moderator)."""
        return self.admission.moderator

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start the workers (they load models), resume queued jobs."""
        await self.offload.run(self.store.open)
        infos = await asyncio.gather(*(worker.start() for worker in self.workers))
        for info in infos:
            for facts in info.facts:
                self.registry.learn(facts)
        await self._inspect_models()
        await self._resume()
        self._is_ready = self._is_accepting = True
        self.scheduler.start()

    async def _inspect_models(self) -> None:
        data_dir = self.settings.data_path
        known = {facts.name for info in (w.info() for w in self.workers) for facts in info.facts}
        for spec in self.registry.specs():
            if spec.name not in known:
                self.registry.learn(await self.offload.run(inspect, spec, data_dir))

    async def _resume(self) -> None:
        store, now = self.store, self.clock()
        requeued, failed = await self.offload.run(
            store.requeue_interrupted, self.settings.engine.max_attempts, now
        )
        if requeued or failed:
            log.info("resumed after a stop: %d requeued, %d failed", len(requeued), len(failed))
        for record in await self.offload.run(store.jobs_in_state, JobState.QUEUED):
            self.table.enqueue(Job.from_record(record))
        self.admission.ledger.load(
            await self.offload.run(store.last_submit_at),
            await self.offload.run(store.images_requested_by_everyone_since, now - DAY_S),
        )
        self.bans.load(await self.offload.run(store.bans))

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; let running batches finish for grace_s, else leave them re-queued."""
        self._is_accepting = False
        still = await self.scheduler.stop(grace_s)
        for job in self.table.running():
            job.stop = job.stop or EndReason.SHUTDOWN
            self._worker(job.worker).cancel([job.id])
        if still:
            await asyncio.wait(still, timeout=max(5.0, self.settings.engine.hang_grace_s))
        await self.offload.drain()
        for worker in self.workers:
            await worker.close()
        await self.offload.close()
        self.store.close()

    def reload(self, settings: Settings) -> None:
        """Swap in new settings (limits, moderation, frontends); engine and models: at restart."""
        if settings.engine != self.settings.engine or settings.models != self.settings.models:
            log.warning("engine and model settings changed; they take effect after a restart")
            settings = dataclasses.replace(
                settings, engine=self.settings.engine, models=self.settings.models
            )
        self.settings = settings
        self.admission.reload(settings)

    # -- submitting ------------------------------------------------------------------------

    def admit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Pending:
        """Decide now, from memory, whether a request becomes a job; raise the typed refusal.

        Returns the job's future: it resolves once the job is in SQLite (or raises StoreError).
        A frontend can answer a refusal at once and acknowledge an accepted job before it is
        durable. Variation and upscale requests must be derived first (`submit` does it).
        """
        if not self._is_accepting:
            raise ShuttingDown()
        existing = self._seen(idempotency_key)
        if existing is not None:
            return existing
        resolved = self.admission.check(request, requester)
        now = self.clock()
        job = Job(new_id(), 0, requester, resolved, origin or {}, now)
        self.table.hold(job)
        self.admission.ledger.note(requester.key, now, int(resolved.count or 1), job.id)
        pending = asyncio.ensure_future(self._persist(job, idempotency_key))
        self.offload.track(pending)
        if idempotency_key:
            self._pending[idempotency_key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(idempotency_key, None))
        return pending

    async def submit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Validate, moderate, apply limits and persist a job; return it once it is durable."""
        if request.kind != Kind.TXT2IMG and request.width is None:
            request = await self._derive(request, requester)
        return await self.admit(request, requester, origin, idempotency_key)

    def _seen(self, idempotency_key: str | None) -> Pending | None:
        # Memory only: the store's insert checks the key again, atomically, off the loop.
        if not idempotency_key:
            return None
        if idempotency_key in self._pending:
            return self._pending[idempotency_key]
        job_id = self._keys.get(idempotency_key)
        if job_id is None:
            return None
        done: Pending = asyncio.get_running_loop().create_future()
        done.set_result(self.job(job_id))
        return done

    async def _persist(self, job: Job, idempotency_key: str | None) -> JobView:
        try:
            record = await self.offload.run(
                self.store.insert_job, job.id, job.requester_key, job.requester.to_dict(),
                job.request.to_dict(), job.origin, idempotency_key, job.created_at,
            )  # fmt: skip
        except BaseException:
            self.table.release(job)
            self.admission.ledger.refund(job.id)
            raise
        if record.id != job.id:  # the store knew the key (from before a restart)
            self.table.release(job)
            self.admission.ledger.refund(job.id)
            return await self.fetch_job(record.id)
        job.seq = record.seq
        if idempotency_key:
            self._keys[idempotency_key] = job.id
            while len(self._keys) > IDEMPOTENCY_KEYS_KEPT:
                self._keys.popitem(last=False)
        self.table.enqueue(job)
        self.scheduler.wake()
        self.views.publish_positions()
        return self.views.view(job)

    async def _derive(self, request: GenerationRequest, requester: Requester) -> GenerationRequest:
        limits = limits_mod.effective(self.settings.limits, requester)
        return await self.derivations.derive(request, limits)

    # -- following and cancelling ----------------------------------------------------------

    def job(self, job_id: str) -> JobView:
        """Return a job's current state (active from memory, else from the store); NotFound."""
        job = self.table.get(job_id)
        if job is not None:
            return self.views.view(job)
        view = self.library.stored_job(job_id)
        if view is None:
            raise NotFound("job", job_id)
        return view

    async def fetch_job(self, job_id: str) -> JobView:
        """Return a job's current state, reading the store off the loop; raise NotFound."""
        job = self.table.get(job_id)
        if job is not None:
            return self.views.view(job)
        view = await self.offload.run(self.library.stored_job, job_id)
        if view is None:
            raise NotFound("job", job_id)
        return view

    def jobs(self, requester_key: str | None = None) -> list[JobView]:
        """Return active jobs (running first, then waiting in run order)."""
        return self.views.active(requester_key)

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        """Yield a job's events from its current state to its end."""
        job = self.table.get(job_id)
        if job is None:
            yield await self._final_event(job_id)
            return
        async for event in self.bus.stream(job_id, self.views.current_event(job)):
            yield event

    async def _final_event(self, job_id: str) -> Event:
        view = await self.fetch_job(job_id)
        if view.state == JobState.DONE:
            images = await self.offload.run(self.library.images_of_job, job_id)
            return Finished(job_id, tuple(images), view.seconds or 0.0)
        if view.state == JobState.CANCELLED:
            return Cancelled(job_id, (view.error or "").removeprefix("cancelled by "))
        return Failed(job_id, view.error or "interrupted")

    async def cancel(self, job_id: str, by: Requester) -> JobView:
        """Cancel a waiting or running job: its requester's, or anyone's for a moderator."""
        job = self.table.get(job_id)
        if job is None:
            return await self.fetch_job(job_id)
        if by.key != job.requester_key:
            if not self.moderator.is_moderator(by):
                raise Forbidden("cancel someone else's job")
            self._audit("mod_cancel", by.key, target=job.id, prompt=job.request.prompt)
        if job.state == JobState.RUNNING:
            job.stop, job.stopped_by = EndReason.CANCELLED, by.key
            self._worker(job.worker).cancel([job.id])
            return self.views.view(job)
        self.table.withdraw(job)
        reason = f"cancelled by {by.key}"
        await self.offload.run(
            self.store.finish_job, job.id, JobState.CANCELLED, self.clock(), reason
        )
        self.ends.cancel(job, by.key, is_written=True)
        self.views.publish_positions()
        return await self.fetch_job(job_id)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event (on the loop); return the function that stops it."""
        return self.bus.listen(listener)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> EngineStatus:
        """Return the default model, every worker and model, the queue and recent speed."""
        return report(self, self._is_ready, self._is_accepting)

    def _is_served(self, model: str) -> bool:
        return any(worker.info().can_serve(model) for worker in self.workers)

    def _worker(self, name: str | None) -> Worker:
        return next(worker for worker in self.workers if worker.name == name)

    # -- requests made from others -----------------------------------------------------------

    async def reroll_request(self, job_id: str) -> GenerationRequest:
        """Return a job's request with a new random seed."""
        return dataclasses.replace((await self.fetch_job(job_id)).request, seed=None)

    async def variation_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return a variation (img2img on the same weights) of a stored image, filled in."""
        request = GenerationRequest(prompt="", kind=Kind.VARIATION, source_image_id=image_id)
        return await self._derive(request, by)

    async def upscale_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return a 2× upscale of a stored image (capped by the size limits), filled in."""
        request = GenerationRequest(prompt="", kind=Kind.UPSCALE, source_image_id=image_id)
        return await self._derive(request, by)

    # -- moderator actions and delivery ------------------------------------------------------

    async def delete_image(self, image_id: str, by: Requester) -> None:
        """Delete an image: its author's, or anyone's for a moderator."""
        record = await self.derivations.source(image_id)
        is_author = by.source == record.source and by.user_id == record.author_id
        if not is_author and not self.moderator.is_moderator(by):
            raise Forbidden("delete someone else's image")
        await self.offload.run(self.store.delete_image, image_id)
        if not is_author:
            self._audit("mod_delete", by.key, target=image_id, prompt=record.prompt)

    async def ban(self, user_key: str, until: float | None, reason: str, by: Requester) -> None:
        """Ban a requester key (e.g. `discord:1234`) until a time, or forever."""
        await self.bans.ban(user_key, until, reason, by, self.moderator)

    async def unban(self, user_key: str, by: Requester) -> bool:
        """Lift a ban; False when there was none."""
        return await self.bans.unban(user_key, by, self.moderator)

    async def mark_delivered(self, job_id: str, delivery: dict[str, Any]) -> bool:
        """Record a frontend's delivery of a job; False when it was already delivered."""
        return bool(
            await self.offload.run(self.store.mark_delivered, job_id, delivery, self.clock())
        )

    async def update_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Keep a frontend's delivery notes on a job (message ids, attempts)."""
        await self.offload.run(self.store.update_delivery, job_id, delivery)

    def undelivered(self, source: str) -> list[JobView]:
        """Return a frontend's ended jobs that await delivery (any thread: reads the store)."""
        records = self.store.undelivered(source)
        return [self.library.stored_job(r.id) or JobView.of_record(r) for r in records]

    def _audit_blocked(self, requester: Requester, prompt: str, blocked: Blocked) -> None:
        self.counters.failures[f"blocked:{blocked.rule}"] += 1
        self._audit(
            "rejected", requester.key, rule=blocked.rule, prompt=prompt, detail=blocked.term
        )

    def _audit(self, action: str, actor: str, **fields: str) -> None:
        self.offload.spawn(
            self.store.add_audit, action, actor, self.clock(), fields.get("target", ""),
            fields.get("rule", ""), fields.get("prompt", ""), fields.get("detail", ""),
        )  # fmt: skip


def new_id() -> str:
    """Return a short, URL-safe, unguessable id."""
    return secrets.token_hex(6)
