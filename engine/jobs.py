"""Jobs in memory: the active ones (waiting in fair order, or running on a worker) and views.

The store holds every job; this table holds the queued and running ones, so admission,
positions and the scheduler never read SQLite. A job is in the table from the moment admission
accepts it until it ends; `JobState` says where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.queue import FairQueue
from engine.request import GenerationRequest, Requester
from engine.store import JobRecord, JobState


class EndReason(StrEnum):
    """Why a running job is being stopped before it finished."""

    CANCELLED = "cancelled"  # by its requester or a moderator
    TIMED_OUT = "timed_out"  # the watchdog
    SHUTDOWN = "shutdown"  # closing: left running in the store, re-queued at the next start


@dataclass(eq=False)
class Job:
    """A queued or running job (owned by the engine's loop)."""

    id: str
    seq: int
    requester: Requester
    request: GenerationRequest
    origin: dict[str, Any]
    created_at: float
    state: JobState = JobState.QUEUED
    step: int = 0
    total: int = 0
    started_at: float | None = None
    worker: str | None = None
    stop: EndReason | None = None
    stopped_by: str | None = None
    skips: int = 0
    attempt: int = 0
    weight: int = 1  # turns per round in the fair queue ([limits] weight, by guild and role)

    @property
    def requester_key(self) -> str:
        """Return the key fairness and limits count by."""
        return self.requester.key

    @property
    def model(self) -> str:
        """Return the registry name of the model the job runs on."""
        return str(self.request.model or "")

    @classmethod
    def from_record(cls, record: JobRecord) -> Job:
        """Rebuild a waiting job from its row (after a restart)."""
        return cls(
            id=record.id,
            seq=record.seq,
            requester=Requester.from_dict(record.requester),
            request=GenerationRequest.from_dict(record.request),
            origin=record.origin,
            created_at=record.created_at,
            attempt=record.attempts,
        )


@dataclass(frozen=True)
class JobView:
    """A job as frontends see it."""

    id: str
    state: JobState
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
    worker: str | None = None

    @classmethod
    def of_record(cls, record: JobRecord, image_ids: tuple[str, ...] = ()) -> JobView:
        """Return the view of a stored job (an ended one, usually)."""
        return cls(
            id=record.id,
            state=record.state,
            requester=Requester.from_dict(record.requester),
            request=GenerationRequest.from_dict(record.request),
            origin=record.origin,
            created_at=record.created_at,
            error=record.error,
            image_ids=image_ids,
            seconds=record.seconds,
            delivered_at=record.delivered_at,
            delivery=record.delivery,
            worker=record.worker,
        )


class JobTable:
    """The active jobs: waiting in fair order, or running on a worker."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._queue: FairQueue[Job] = FairQueue()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> Job | None:
        """Return an active job, or None."""
        return self._jobs.get(job_id)

    def hold(self, job: Job) -> None:
        """Count an accepted job (not yet durable, so not yet waiting) against the limits."""
        self._jobs[job.id] = job

    def release(self, job: Job) -> None:
        """Forget a held job whose insert failed."""
        if self._jobs.get(job.id) is job and job.state == JobState.QUEUED:
            self._queue.remove(job.id)
            del self._jobs[job.id]

    def enqueue(self, job: Job) -> None:
        """Put a held (or resumed) job in line."""
        self._jobs[job.id] = job
        job.state, job.worker, job.step, job.total = JobState.QUEUED, None, 0, 0
        self._queue.push(job)

    def waiting(self) -> list[Job]:
        """Return waiting jobs in the order they will run."""
        return self._queue.order()

    def waiting_count(self) -> int:
        """Return how many jobs wait."""
        return len(self._queue)

    def running(self) -> list[Job]:
        """Return running jobs."""
        return [job for job in self._jobs.values() if job.state == JobState.RUNNING]

    def of(self, requester_key: str) -> list[Job]:
        """Return a requester's active jobs (held, waiting or running)."""
        return [job for job in self._jobs.values() if job.requester_key == requester_key]

    def start(self, jobs: list[Job], worker: str, at: float) -> None:
        """Move picked jobs to running on a worker."""
        self._queue.take(jobs)
        for job in jobs:
            job.state, job.worker, job.started_at = JobState.RUNNING, worker, at
            job.attempt += 1

    def adopt(self, jobs: list[Job], worker: str) -> None:
        """Take jobs that still run on a remote worker after a restart (same attempt)."""
        for job in jobs:
            self._jobs[job.id] = job
            job.state, job.worker = JobState.RUNNING, worker
            self._queue.adopt(job)

    def withdraw(self, job: Job) -> None:
        """Take a waiting job out of line (cancelled before it ran)."""
        self._queue.remove(job.id)
        self._jobs.pop(job.id, None)

    def finish(self, job: Job) -> None:
        """Forget a job that ended (or stopped for a restart)."""
        if job.state == JobState.RUNNING:
            self._queue.done(job)
        elif job.id in self._jobs:
            self._queue.remove(job.id)
        self._jobs.pop(job.id, None)

    def requeue(self, job: Job) -> None:
        """Put a running job back in line (its worker went away)."""
        if job.state == JobState.RUNNING:
            self._queue.done(job)
        self.enqueue(job)
