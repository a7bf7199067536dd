"""The engine: the one API both frontends use, over small services on one asyncio loop.

    submit ─► intake/admission ─► store ─► scheduler ──► Worker ──► LocalWorker (thread per GPU)
                                              ▲ fair pick,  │ run(batch, progress)
    events ◄── event bus ◄── runs / results ◄─┘ affinity    ▼ image data + model facts

- `intake` admits from memory (`admission`: bans, channel, limits, moderation, model,
  capacity, cooldown, quota) and makes each job durable; `jobs` holds the active jobs in fair
  order; `scheduler` hands batches to free workers; `runs` starts, runs and ends every batch;
  `results` writes PNGs and records on the I/O thread (`offload`); `events` carries Queued →
  Started → Progress → Finished | Failed | Cancelled; `views` answers what frontends ask;
  `models` is the registry; `library` is what frontends read, from any thread; `actions` is
  what moderators do; `starboard` keeps stars as favourites and claims each repost once.
- A `Worker` (worker.py) is the only thing the scheduler talks to; only `LocalWorker` and
  `pipeline.py` import torch, so `import engine` never does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from engine import limits as limits_mod
from engine import loras as loras_mod
from engine.actions import ModeratorActions
from engine.admission import Admission
from engine.bans import Bans
from engine.config import Settings
from engine.derive import Derivations
from engine.estimates import Estimates
from engine.events import Event, EventBus, Listener
from engine.intake import Intake, Pending
from engine.jobs import EndReason, JobTable, JobView
from engine.library import Library
from engine.local import local_workers
from engine.models import ModelRegistry, inspect, source_folder
from engine.moderation import Moderator
from engine.offload import Offload
from engine.preferences import PreferenceBook, Preferences
from engine.preferences import validate as validate_preferences
from engine.recovery import recover
from engine.request import GenerationRequest, Kind, Requester
from engine.runs import BatchRunner, Counters, JobEnds
from engine.scheduler import Scheduler
from engine.starboard import Starboard
from engine.status import EngineStatus, report
from engine.store import ImageRecord, JobState, Store
from engine.views import Views
from engine.worker import Worker

log = logging.getLogger(__name__)


class Engine:
    """The shared core: submit, follow, cancel; status; moderator actions; delivery marks."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Callable[[], float] = time.time,
        workers: Sequence[Worker] | None = None,
    ) -> None:
        # Wiring only (longer than 40 lines for that reason): each service gets the few
        # collaborators it needs, and nothing else holds them.
        self.settings, self.store, self.clock = settings, store, clock
        store.busy_timeout_s = settings.engine.busy_timeout_s
        self.registry = ModelRegistry.from_settings(settings)
        if workers is None:
            workers = []
            if settings.engine.workers in ("local", "both"):
                workers = local_workers(settings.engine, self.registry, settings.data_path)
        self.offload, self.bus, self.table = Offload(), EventBus(), JobTable()
        self.estimates, self.counters = Estimates(), Counters()
        self.library = Library(store, clock)
        self.starboard = Starboard(store, self.offload, clock)
        self.bans = Bans(store, self.offload, clock)
        self.preference_book = PreferenceBook(store, self.offload, clock)
        self.views = Views(
            self.table, self.estimates, self.bus, self.library, self.offload,
            lambda: max(1, len(self.workers)),
        )  # fmt: skip
        self.admission = Admission(
            settings, self.table, self.registry, self.bans, self.estimates,
            self._may_queue_for, self.preference_book, clock,
        )  # fmt: skip
        self.ends = JobEnds(
            self.table, self.bus, self.offload, store, self.admission.ledger, self.counters, clock
        )
        runner = BatchRunner(
            settings.engine, store, self.offload, self.bus, self.ends, self.estimates,
            self.registry, clock,
        )  # fmt: skip
        self.runner = runner
        self.scheduler = Scheduler(self.table, list(workers), settings.engine, runner.run, clock)
        self.ends.on_requeue = self._requeued
        self.pool = None
        if settings.engine.workers in ("celery", "both"):
            from engine.remote import CeleryPool  # only the front with remote workers needs Celery

            self.pool = CeleryPool(settings, self.scheduler.add)
        self.intake = Intake(
            store, self.offload, self.table, self.admission, self.views, self.ends,
            self.registry, self.scheduler.wake, clock,
        )  # fmt: skip
        self.derivations = Derivations(self.library, self.registry, self.offload)
        self.actions = ModeratorActions(
            store, self.offload, self.bans, self.derivations, self.counters,
            lambda: self.admission.moderator, clock,
        )  # fmt: skip
        self.admission.on_blocked = self.actions.blocked
        self._is_ready = False

    def _may_queue_for(self, model: str) -> bool:
        # Remote boxes come and go (a reboot, a new box): a configured model's jobs wait for one.
        return self.pool is not None or self.scheduler.serves(model)

    @property
    def workers(self) -> list[Worker]:
        """Return every worker: local ones, and remote slots as their boxes appear."""
        return self.scheduler.workers

    @property
    def moderator(self) -> Moderator:
        """Return the moderation rules in force."""
        return self.admission.moderator

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start the workers (they load models), resume queued jobs.

        Raise ConfigError naming a LoRA that is not safetensors or does not fit its models.
        """
        await self.offload.run(self.store.open)
        await self.offload.run(self._check_loras, self.settings)
        infos = list(await asyncio.gather(*(worker.start() for worker in self.workers)))
        if self.pool is not None:
            await self.pool.start()
            infos += [worker.info() for worker in self.pool.slots.values()]
        known = set()
        for facts in (facts for info in infos for facts in info.facts):
            self.registry.learn(facts)
            known.add(facts.name)
        for spec in self.registry.specs():  # models no worker loaded yet: read their files
            if spec.name not in known:
                self.registry.learn(await self.offload.run(inspect, spec, self.settings.data_path))
        if self.pool is not None:
            await recover(
                self.pool, self.store, self.offload, self.table, self.scheduler, self.runner
            )
        await self.intake.resume(self.settings.engine.max_attempts, self.bans)
        self.preference_book.load(await self.offload.run(self.store.preferences))
        self._is_ready = self.intake.is_open = True
        self.scheduler.start()

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; let running batches finish for grace_s, else leave them re-queued."""
        self.intake.is_open = False
        still = await self.scheduler.stop(grace_s)
        for job in self.table.running():
            job.stop = job.stop or EndReason.SHUTDOWN
            self.scheduler.worker(job.worker).cancel([job.id])
        if still:
            await asyncio.wait(still, timeout=max(5.0, self.settings.engine.hang_grace_s))
        await self.offload.drain()
        for worker in self.workers:
            await worker.close()
        if self.pool is not None:
            await self.pool.close()
        await self.offload.close()
        self.store.close()

    def reload(self, settings: Settings) -> None:
        """Swap in new settings (limits, moderation, frontends); engine and models: at restart."""
        if settings.engine != self.settings.engine or settings.models != self.settings.models:
            log.warning("engine and model settings changed; they take effect after a restart")
            settings = dataclasses.replace(
                settings, engine=self.settings.engine, models=self.settings.models
            )
        self._check_loras(settings)  # raises ConfigError: the old settings stay in force
        self.settings = settings
        self.registry.loras = dict(settings.loras)
        self.admission.reload(settings)

    def _check_loras(self, settings: Settings) -> None:
        """Refuse LoRAs that are not safetensors or do not fit their models (headers only)."""
        folders = {
            spec.name: source_folder(spec.path, settings.data_path)
            for spec in self.registry.specs()
        }
        loras_mod.check(settings.loras, folders)

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
        durable. Variation and upscale requests must be filled in first (`submit` does it).
        """
        return self.intake.admit(request, requester, origin, idempotency_key, self.job)

    async def submit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Validate, moderate, apply limits and persist a job; return it once it is durable."""
        if request.kind != Kind.TXT2IMG:  # its size and settings come from the stored source
            request = await self._derive(request, requester)
        return await self.admit(request, requester, origin, idempotency_key)

    async def _derive(self, request: GenerationRequest, requester: Requester) -> GenerationRequest:
        limits = limits_mod.effective(self.settings.limits, requester)
        return await self.derivations.derive(request, limits)

    # -- your settings -----------------------------------------------------------------------

    def preferences(self, requester: Requester) -> Preferences:
        """Return a person's own defaults (`/settings`); the server's when they set none."""
        return self.preference_book.of(requester)

    async def set_preferences(self, requester: Requester, preferences: Preferences) -> Preferences:
        """Check and store a person's defaults; raise InvalidRequest naming the field and range.

        Values above this requester's limits today are kept (their limits may grow) and clamped
        when used; `Preferences()` restores the server's defaults.
        """
        checked = validate_preferences(preferences, self.settings, self.admission.text_models())
        return await self.preference_book.save(requester, checked)

    # -- following and cancelling ----------------------------------------------------------

    def job(self, job_id: str) -> JobView:
        """Return a job's current state (active from memory, else from the store); NotFound."""
        return self.views.job(job_id)

    async def fetch_job(self, job_id: str) -> JobView:
        """Return a job's current state, reading the store off the loop; raise NotFound."""
        return await self.views.fetch(job_id)

    def weight(self, requester: Requester) -> int:
        """Return a requester's turns per round in the fair queue (its tier)."""
        return limits_mod.effective(self.settings.limits, requester).weight

    def jobs(self, requester_key: str | None = None) -> list[JobView]:
        """Return active jobs (running first, then waiting in run order)."""
        return self.views.active(requester_key)

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        """Yield a job's events from its current state to its end."""
        job = self.table.get(job_id)
        if job is None:
            yield await self.views.final_event(job_id)
            return
        async for event in self.bus.stream(job_id, self.views.current_event(job)):
            yield event

    async def cancel(self, job_id: str, by: Requester) -> JobView:
        """Cancel a waiting or running job: its requester's, or anyone's for a moderator."""
        job = self.table.get(job_id)
        if job is None:
            return await self.fetch_job(job_id)
        self.actions.may_act_for(by, job.requester_key, job.id, job.request.prompt)
        if job.state == JobState.RUNNING:
            job.stop, job.stopped_by = EndReason.CANCELLED, by.key
            self.scheduler.worker(job.worker).cancel([job.id])
            return self.views.view(job)
        self.table.withdraw(job)
        reason = f"cancelled by {by.key}"
        await self.offload.run(
            self.store.finish_job, job.id, JobState.CANCELLED, self.clock(), reason
        )
        self.ends.cancel(job, by.key, is_written=True)
        self.views.publish_positions()
        return await self.fetch_job(job_id)

    def _requeued(self) -> None:
        self.scheduler.wake()
        self.views.publish_positions()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event (on the loop); return the function that stops it."""
        return self.bus.listen(listener)

    def status(self) -> EngineStatus:
        """Return the default model, every worker and model, the queue and recent speed."""
        return report(self, self._is_ready, self.intake.is_open)

    # -- requests made from others -----------------------------------------------------------

    async def reroll_request(self, job_id: str) -> GenerationRequest:
        """Return a job's request with a new random seed (and its stored input images)."""
        request = (await self.fetch_job(job_id)).request
        init, mask = await self.offload.run(self.store.job_inputs, job_id)
        return dataclasses.replace(request, seed=None, init_png=init, mask_png=mask)

    async def variation_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return a variation (img2img on the same weights) of a stored image, filled in."""
        request = GenerationRequest(prompt="", kind=Kind.VARIATION, source_image_id=image_id)
        return await self._derive(request, by)

    async def remix_request(
        self, job_id: str, prompt: str, negative_prompt: str = ""
    ) -> GenerationRequest:
        """Return a job's request with new prompts: same seed, settings and input images."""
        request = (await self.fetch_job(job_id)).request
        init, mask = await self.offload.run(self.store.job_inputs, job_id)
        return dataclasses.replace(
            request, prompt=prompt, negative_prompt=negative_prompt, init_png=init, mask_png=mask
        )

    async def image_chain(self, image_id: str) -> list[ImageRecord]:
        """Return an image's ancestry oldest first, ending with it (raise NotFound)."""
        return await self.derivations.chain(image_id)

    async def upscale_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return a 2× upscale of a stored image (capped by the size limits), filled in."""
        request = GenerationRequest(prompt="", kind=Kind.UPSCALE, source_image_id=image_id)
        return await self._derive(request, by)

    # -- moderator actions and delivery ------------------------------------------------------

    async def delete_image(self, image_id: str, by: Requester) -> None:
        """Delete an image: its author's, or anyone's for a moderator."""
        await self.actions.delete_image(image_id, by)

    async def ban(self, user_key: str, until: float | None, reason: str, by: Requester) -> None:
        """Ban a requester key (e.g. `discord:1234`) until a time, or forever."""
        await self.actions.ban(user_key, until, reason, by)

    async def unban(self, user_key: str, by: Requester) -> bool:
        """Lift a ban; False when there was none."""
        return await self.actions.unban(user_key, by)

    async def mark_delivered(self, job_id: str, delivery: dict[str, Any]) -> bool:
        """Record a frontend's delivery of a job; False when it was already delivered."""
        at = self.clock()
        return bool(await self.offload.run(self.store.mark_delivered, job_id, delivery, at))

    async def update_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Keep a frontend's delivery notes on a job (message ids, attempts)."""
        await self.offload.run(self.store.update_delivery, job_id, delivery)

    def undelivered(self, source: str) -> list[JobView]:
        """Return a frontend's ended jobs that await delivery (any thread: reads the store)."""
        records = self.store.undelivered(source)
        return [self.library.stored_job(r.id) or JobView.of_record(r) for r in records]
