"""The fair queue: weighted fair queuing between requesters, FIFO within one.

Start-time fair queuing: a job pushed for a requester of weight w ([limits] `weight`, 1 unless
a guild or role override raises it) starts at S = max(the finish tag of its requester's
previous job, the virtual time) and finishes at F = S + 1 / w; the virtual time is the start
tag of the latest job started. Jobs run by (F, how long ago their requester was last served,
submission order). So when A has 4 jobs queued and B submits one, B's job runs second; when
A, B and C all wait, each is served once before anyone twice; running jobs count against
their requester; nobody saves up turns while away; and a weight-2 requester gets two turns to
a weight-1 requester's one.

The bound on waiting: a job tagged F waits only for jobs tagged at most F, and a requester of
weight w_i has at most ⌈(F − now) · w_i⌉ jobs with tags in (now, F]. So one job from a requester
with nothing queued (F = now + 1) waits for at most Σ w_i of the others' jobs (weights are at
most 10), however many they queued; its k-th queued job, for at most k · Σ w_i.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Generic, Protocol, TypeVar


class QueuedJob(Protocol):
    """What the queue needs to know about a job."""

    id: str
    seq: int
    weight: int

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
        self._tags: dict[str, float] = {}  # waiting job → finish tag
        self._last: dict[str, float] = {}  # requester → finish tag of its latest job
        self._newest: dict[str, int] = {}  # requester → seq of its latest job pushed
        self._queued: Counter[str] = Counter()  # requester → waiting jobs
        self._running: Counter[str] = Counter()
        self._served: OrderedDict[str, int] = OrderedDict()  # requester → tick of last start
        self._now = 0.0  # virtual time: the start tag of the latest job started
        self._tick = 0
        self._order: list[J] | None = None  # cached; every change clears it

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, job: J) -> None:
        """Add a waiting job (tagged now: its place does not drift as others start)."""
        if job.id in self._waiting:
            return
        key = job.requester_key
        tag = self._next_tag(job)
        if job.seq < self._newest.get(key, -1):
            # Back in line after its worker went away: it keeps its place before the
            # requester's later jobs (tags stay in submission order within a requester).
            mine = [other for other in self._waiting.values() if other.requester_key == key]
            tags = sorted([tag, *(self._tags[other.id] for other in mine)])
            for other, its_tag in zip(sorted([job, *mine], key=lambda j: j.seq), tags, strict=True):
                self._tags[other.id] = its_tag
        else:
            self._tags[job.id] = tag
            self._newest[key] = job.seq
        self._waiting[job.id] = job
        self._queued[key] += 1
        self._order = None

    def _next_tag(self, job: J) -> float:
        key = job.requester_key
        start = max(self._last.get(key, self._now), self._now)
        self._last[key] = start + 1 / max(1, job.weight)
        return self._last[key]

    def remove(self, job_id: str) -> J | None:
        """Take a waiting job out (cancelled); None when it is not waiting. The requester's
        later jobs move up by its turn, so cancelling costs no place."""
        self._order = None
        job = self._waiting.pop(job_id, None)
        if job is None:
            return None
        key, step = job.requester_key, 1 / max(1, job.weight)
        self._tags.pop(job_id)
        self._unqueue(key)
        for other in self._waiting.values():
            if other.requester_key == key and other.seq > job.seq:
                self._tags[other.id] -= step
        if key in self._last:
            self._last[key] -= step
        return job

    def _unqueue(self, key: str) -> None:
        self._queued[key] -= 1
        if self._queued[key] <= 0:
            del self._queued[key]

    def order(self) -> list[J]:
        """Return waiting jobs in the order they will run."""
        if self._order is None:
            self._order = self._compute_order()
        return list(self._order)

    def _compute_order(self) -> list[J]:
        def place(job: J) -> tuple[float, int, int]:
            return (self._tags[job.id], self._served.get(job.requester_key, -1), job.seq)

        return sorted(self._waiting.values(), key=place)

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
            self._unqueue(job.requester_key)
            self._started(job, self._tags.pop(job.id))
        self._order = None

    def adopt(self, job: J) -> None:
        """Count a job as running that never waited here (still running after a restart)."""
        self._started(job, self._next_tag(job))
        self._order = None

    def _started(self, job: J, tag: float) -> None:
        key = job.requester_key
        self._running[key] += 1
        self._now = max(self._now, tag - 1 / max(1, job.weight))
        self._tick += 1
        self._served[key] = self._tick
        self._served.move_to_end(key)
        if len(self._served) > SERVED_MEMORY:
            forgotten, _ = self._served.popitem(last=False)
            if forgotten not in self._queued:
                self._last.pop(forgotten, None)
                self._newest.pop(forgotten, None)
        if key not in self._queued and self._last.get(key, 0.0) <= self._now:
            self._last.pop(key, None)  # nothing ahead of the virtual time: nothing to keep

    def done(self, job: J) -> None:
        """Note that a taken job stopped running."""
        key = job.requester_key
        self._order = None
        self._running[key] -= 1
        if self._running[key] <= 0:
            del self._running[key]

    def count_of(self, requester_key: str) -> int:
        """Return a requester's waiting plus running jobs."""
        return self._queued[requester_key] + self._running[requester_key]
