"""The fair queue: round-robin between requesters, FIFO within one.

A job's place is decided by (its index among its requester's waiting jobs + how many of that
requester's jobs are running, submission order). So when A has 4 jobs queued and B submits
one, B's job runs second.
"""

from __future__ import annotations

from collections import Counter
from typing import Generic, Protocol, TypeVar


class QueuedJob(Protocol):
    """What the queue needs to know about a job."""

    id: str
    seq: int

    @property
    def requester_key(self) -> str: ...


J = TypeVar("J", bound=QueuedJob)


class FairQueue(Generic[J]):
    """Waiting jobs in fair order; counts running jobs per requester."""

    def __init__(self) -> None:
        self._waiting: dict[str, J] = {}
        self._running: Counter[str] = Counter()
        self._order: list[J] | None = None  # cached; every change clears it

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, job: J) -> None:
        """Add a waiting job."""
        self._waiting[job.id] = job
        self._order = None

    def remove(self, job_id: str) -> J | None:
        """Take a waiting job out (cancelled); None when it is not waiting."""
        self._order = None
        return self._waiting.pop(job_id, None)

    def order(self) -> list[J]:
        """Return waiting jobs in the order they will run."""
        if self._order is None:
            self._order = self._compute_order()
        return list(self._order)

    def _compute_order(self) -> list[J]:
        seen: Counter[str] = Counter()
        keyed = []
        for job in sorted(self._waiting.values(), key=lambda j: j.seq):
            key = job.requester_key
            keyed.append(((seen[key] + self._running[key], job.seq), job))
            seen[key] += 1
        keyed.sort(key=lambda pair: pair[0])
        return [job for _, job in keyed]

    def position(self, job_id: str) -> int | None:
        """Return a job's 1-based place in line, or None when it is not waiting."""
        for index, job in enumerate(self.order(), start=1):
            if job.id == job_id:
                return index
        return None

    def take(self, jobs: list[J]) -> None:
        """Move these waiting jobs to running (the scheduler picked them)."""
        for job in jobs:
            del self._waiting[job.id]
            self._running[job.requester_key] += 1
        self._order = None

    def done(self, job: J) -> None:
        """Note that a taken job stopped running."""
        key = job.requester_key
        self._order = None
        self._running[key] -= 1
        if self._running[key] <= 0:
            del self._running[key]

    def count_of(self, requester_key: str) -> int:
        """Return a requester's waiting plus running jobs."""
        waiting = sum(1 for job in self._waiting.values() if job.requester_key == requester_key)
        return waiting + self._running[requester_key]
