"""The scheduler: the one place that knows which worker is free, and what it runs next.

- Fair: waiting jobs are taken in the fair queue's order (round-robin across requesters, FIFO
  within one), across every worker.
- Free workers only: a worker gets a batch only when it has none running, so no job ever waits
  inside a worker (or a broker) while another could start it.
- Affinity: a free worker takes the first job, in fair order, whose model it already holds;
  every job it passes over counts one skip. A job passed over `engine.max_affinity_skips` times
  is taken by the next free worker that can serve it, loaded or not. So nobody waits more than
  that many picks beyond their fair turn for the sake of fewer model loads. A worker holding
  none of the waiting jobs' models takes the first one it can serve.
- Batching: behind the first job, up to the worker's `max_batch` compatible jobs (same model,
  kind, size, steps, guidance, scheduler, LoRAs and their weights) join it, after
  `engine.batch_window_s` so a burst arriving over a few milliseconds runs as one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from engine.config import EngineSettings
from engine.jobs import Job, JobTable
from engine.request import Kind
from engine.worker import Worker, WorkerInfo

log = logging.getLogger(__name__)

RunBatch = Callable[[Worker, list[Job]], Awaitable[None]]


class Scheduler:
    """Dispatch fair batches to free workers."""

    def __init__(
        self,
        table: JobTable,
        workers: Sequence[Worker],
        settings: EngineSettings,
        run_batch: RunBatch,
        clock: Callable[[], float],
    ) -> None:
        self.clock = clock
        self.table = table
        self.workers = list(workers)
        self.settings = settings
        self.run_batch = run_batch
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._is_open = False

    def start(self) -> None:
        """Start dispatching."""
        self._is_open = True
        self._task = asyncio.create_task(self._loop(), name="imagine-scheduler")
        self.wake()

    def wake(self) -> None:
        """Look for work for free workers (a job arrived, or a worker became free)."""
        self._wakeup.set()

    def add(self, worker: Worker) -> None:
        """Take a worker that appeared (a remote box joined, or came back) and find it work."""
        if all(existing.name != worker.name for existing in self.workers):
            self.workers.append(worker)
        self.wake()

    def attach(self, worker: Worker, jobs: list[Job], running: Awaitable[None]) -> None:
        """Count a worker busy with a run that began before a restart (it is followed)."""
        self._busy[worker.name] = asyncio.create_task(self._follow(worker, running))

    async def _follow(self, worker: Worker, running: Awaitable[None]) -> None:
        try:
            await running
        except Exception:
            log.exception("a resumed run on %s failed outside its jobs", worker.name)
        finally:
            self._busy.pop(worker.name, None)
            self.wake()

    def worker(self, name: str | None) -> Worker:
        """Return a worker by name."""
        return next(worker for worker in self.workers if worker.name == name)

    def serves(self, model: str) -> bool:
        """Return whether any worker can run jobs for a model now."""
        return any(worker.info().can_serve(model) for worker in self.workers)

    def is_busy(self, worker: str) -> bool:
        """Return whether a worker runs a batch now."""
        return worker in self._busy

    async def stop(self, grace_s: float) -> list[asyncio.Task[None]]:
        """Stop dispatching; wait up to grace_s for running batches; return those still running."""
        self._is_open = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        running = list(self._busy.values())
        if running:
            await asyncio.wait(running, timeout=grace_s)
        return [task for task in running if not task.done()]

    async def _loop(self) -> None:
        while self._is_open:
            await self._wakeup.wait()
            if self._wants_window():
                # A burst arrives over a few ms: wait for it so it runs as one call, not 1 + 3.
                await asyncio.sleep(self.settings.batch_window_s)
            else:
                # Let the submitter resume first: whoever follows a job it just queued sees
                # Queued before Started.
                await asyncio.sleep(0)
            self._wakeup.clear()
            self._dispatch()

    def _wants_window(self) -> bool:
        return self.settings.batch_window_s > 0 and any(
            worker.info().max_batch > 1 for worker in self._free()
        )

    def _free(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.name not in self._busy]

    def _dispatch(self) -> None:
        for worker in self._free():
            jobs = self.pick(worker.info())
            if not jobs:
                continue
            task = asyncio.create_task(self._run(worker, jobs), name=f"batch-{jobs[0].id}")
            self._busy[worker.name] = task

    async def _run(self, worker: Worker, jobs: list[Job]) -> None:
        try:
            await self.run_batch(worker, jobs)
        except Exception:  # run_batch ends its jobs itself; this is a bug, not a job failure
            log.exception("batch %s on %s failed outside its jobs", jobs[0].id, worker.name)
        finally:
            self._busy.pop(worker.name, None)
            self.wake()

    def pick(self, worker: WorkerInfo) -> list[Job]:
        """Choose the next batch for a free worker and mark it running; [] when nothing fits."""
        order = [job for job in self.table.waiting() if worker.can_serve(job.model)]
        if not order:
            return []
        first = self._first(order, worker)
        batch = [first]
        for job in order:
            if len(batch) >= worker.max_batch:
                break
            if job is not first and _compatible(first, job):
                batch.append(job)
        self.table.start(batch, worker.name, self.clock())
        return batch

    def _first(self, order: list[Job], worker: WorkerInfo) -> Job:
        """Return the affinity pick, counting a skip for each job passed over."""
        limit = self.settings.max_affinity_skips
        for index, job in enumerate(order):
            if job.skips >= limit or job.model in worker.resident:
                for passed in order[:index]:
                    passed.skips += 1
                return job
        return order[0]


def _compatible(first: Job, other: Job) -> bool:
    return first.request.kind == Kind.TXT2IMG and other.request.batch_key == first.request.batch_key
