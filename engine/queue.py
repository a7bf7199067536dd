"""The fair queue: round-robin between requesters, FIFO within one.

A job's place is decided by (its index among its requester's waiting jobs + how many of that
requester's jobs are running, how long ago its requester was last served, submission order).
So when A has 4 jobs queued and B submits one, B's job runs second; and when A, B and C all
wait, each is served once before anyone twice, even after A's first job has ended.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Generic, Protocol, TypeVar


class QueuedJob(Protocol):
    """What the queue needs to know about a job."""

    id: str
    seq: int

    @property
    def requester_key(self) -> str: ...


J = TypeVar("J", bound=QueuedJob)

# Requesters whose last service is remembered; the oldest are forgotten first (they were
# served longest ago, so forgetting them changes little).
SERVED_MEMORY = 100_000


class FairQueue(Generic[J]):
    """Waiting jobs in fair order; counts running jobs per requester."""

    def __init__(self) -> None:
        self._waiting: dict[str, J] = {}
        self._running: Counter[str] = Counter()
        self._served: OrderedDict[str, int] = OrderedDict()  # requester → tick of last start
        self._tick = 0
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
            served = self._served.get(key, -1)
            keyed.append(((seen[key] + self._running[key], served, job.seq), job))
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
            self._served_now(job.requester_key)
        self._order = None

    def _served_now(self, key: str) -> None:
        self._tick += 1
        self._served[key] = self._tick
        self._served.move_to_end(key)
        if len(self._served) > SERVED_MEMORY:
            self._served.popitem(last=False)

    def adopt(self, job: J) -> None:
        """Count a job as running that never waited here (still running after a restart)."""
        self._running[job.requester_key] += 1
        self._served_now(job.requester_key)
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
