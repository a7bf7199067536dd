"""Intake: accepted requests become durable jobs in line; queued jobs come back after a restart.

`admit` is synchronous and reads only memory: idempotency, then admission's checks; an accepted
job is held (it counts against the limits at once) while its row is inserted on the I/O thread,
then put in line. Every accepted job is in SQLite before anyone is told it is queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine import limits as limits_mod
from engine.admission import DAY_S, Admission
from engine.bans import Bans
from engine.errors import ShuttingDown
from engine.jobs import Job, JobTable, JobView
from engine.models import ModelRegistry
from engine.offload import Offload
from engine.request import GenerationRequest, Requester
from engine.runs import JobEnds
from engine.store import JobState, Store
from engine.views import Views

log = logging.getLogger(__name__)

IDEMPOTENCY_KEYS_KEPT = 10_000
Pending = asyncio.Future[JobView]


class Intake:
    """Admit requests, make them durable, and put them in line."""

    def __init__(
        self,
        store: Store,
        offload: Offload,
        table: JobTable,
        admission: Admission,
        views: Views,
        ends: JobEnds,
        registry: ModelRegistry,
        wake: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.offload = offload
        self.table = table
        self.admission = admission
        self.views = views
        self.ends = ends
        self.registry = registry
        self.wake = wake
        self.clock = clock
        self.is_open = False
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._pending: dict[str, Pending] = {}

    def admit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None,
        idempotency_key: str | None,
        existing: Callable[[str], JobView],
    ) -> Pending:
        """Decide from memory; hold the job and start its insert; return the job's future."""
        if not self.is_open:
            raise ShuttingDown()
        seen = self._seen(idempotency_key, existing)
        if seen is not None:
            return seen
        resolved = self.admission.check(request, requester)
        now = self.clock()
        job = Job(new_id(), 0, requester, resolved, origin or {}, now)
        job.weight = self._weight(requester)
        self.table.hold(job)
        self.admission.ledger.note(requester.key, now, int(resolved.count or 1), job.id)
        pending = asyncio.ensure_future(self._persist(job, idempotency_key, existing))
        self.offload.track(pending)
        if idempotency_key:
            self._pending[idempotency_key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(idempotency_key, None))
        return pending

    def _seen(
        self, idempotency_key: str | None, existing: Callable[[str], JobView]
    ) -> Pending | None:
        # Memory only: the store's insert checks the key again, atomically, off the loop.
        if not idempotency_key:
            return None
        if idempotency_key in self._pending:
            return self._pending[idempotency_key]
        job_id = self._keys.get(idempotency_key)
        if job_id is None:
            return None
        done: Pending = asyncio.get_running_loop().create_future()
        done.set_result(existing(job_id))
        return done

    async def _persist(
        self, job: Job, idempotency_key: str | None, existing: Callable[[str], JobView]
    ) -> JobView:
        try:
            record = await self.offload.run(
                self.store.insert_job, job.id, job.requester_key, job.requester.to_dict(),
                job.request.to_dict(), job.origin, idempotency_key, job.created_at,
                job.request.inputs,
            )  # fmt: skip
        except BaseException:
            self.table.release(job)
            self.admission.ledger.refund(job.id)
            raise
        if record.id != job.id:  # the store knew the key (from before a restart)
            self.table.release(job)
            self.admission.ledger.refund(job.id)
            return existing(record.id)
        job.seq = record.seq
        # Stored now: runs read them back from SQLite, the queue need not hold the bytes.
        job.request = dataclasses.replace(job.request, init_png=None, mask_png=None)
        if idempotency_key:
            self._keys[idempotency_key] = job.id
            while len(self._keys) > IDEMPOTENCY_KEYS_KEPT:
                self._keys.popitem(last=False)
        self.table.enqueue(job)
        self.wake()
        self.views.publish_positions()
        return self.views.view(job)

    async def resume(self, max_attempts: int, bans: Bans) -> None:
        """After a start: re-queue what was running (bounded), queue what was waiting, reload
        the quota ledger and the bans (all read off the loop)."""
        store, now = self.store, self.clock()
        requeued, failed = await self.offload.run(store.requeue_interrupted, max_attempts, now)
        if requeued or failed:
            log.info("resumed after a stop: %d requeued, %d failed", len(requeued), len(failed))
        for record in await self.offload.run(store.jobs_in_state, JobState.QUEUED):
            self._resume_job(Job.from_record(record))
        self.admission.ledger.load(
            await self.offload.run(store.last_submit_at),
            await self.offload.run(store.images_requested_by_everyone_since, now - DAY_S),
        )
        bans.load(await self.offload.run(store.bans))

    def _weight(self, requester: Requester) -> int:
        return limits_mod.effective(self.admission.settings.limits, requester).weight

    def _resume_job(self, job: Job) -> None:
        job.weight = self._weight(job.requester)
        model = job.request.model
        if not model:  # queued before models had names: the default model
            job.request = dataclasses.replace(job.request, model=self.registry.default_name)
        elif model not in self.registry.names():
            self.table.hold(job)
            self.ends.fail(job, f"model {model} is no longer offered on this server")
            return
        self.table.enqueue(job)


def new_id() -> str:
    """Return a short, URL-safe, unguessable id."""
    return secrets.token_hex(6)
