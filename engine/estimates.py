"""How long work takes: seconds per unit (pixels × steps × images) learned from each worker, and
the wait before each queued job starts, simulated over the workers in fair order."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from engine.jobs import Job
from engine.request import GenerationRequest

UNKNOWN_PER_UNIT_S = 1e-6  # before anything ran: a 512 px, 25-step image "takes" 6.5 s
LEARNING_RATE = 0.3


def work_units(request: GenerationRequest) -> float:
    """Return a request's cost in pixel-steps-images."""
    return float(
        (request.width or 0) * (request.height or 0) * (request.steps or 0) * (request.count or 1)
    )


class Estimates:
    """A moving average of seconds per work unit, per worker and overall."""

    def __init__(self) -> None:
        self._per_unit: dict[str, float] = {}
        self._overall: float | None = None

    def learn(self, worker: str, jobs: Sequence[Job], seconds: float) -> None:
        """Fold one finished batch into the averages."""
        units = sum(work_units(job.request) for job in jobs)
        if units <= 0:
            return
        sample = seconds / units
        self._per_unit[worker] = _blend(self._per_unit.get(worker), sample)
        self._overall = _blend(self._overall, sample)

    def seconds(self, request: GenerationRequest, worker: str | None = None) -> float:
        """Return how long a request should take (on a worker, or on an average one)."""
        per_unit = self._per_unit.get(worker or "", self._overall)
        return (per_unit if per_unit is not None else UNKNOWN_PER_UNIT_S) * work_units(request)

    def seconds_per_unit(self) -> float | None:
        """Return the overall average, or None before any batch ran."""
        return self._overall

    def remaining_s(self, job: Job) -> float:
        """Return how long a running job still needs."""
        done = job.step / job.total if job.total else 0.0
        return self.seconds(job.request, job.worker) * (1 - done)

    def start_times(
        self, waiting: Sequence[Job], running: Sequence[Job], workers: int
    ) -> dict[str, float]:
        """Return seconds until each waiting job starts: each takes the first free worker."""
        busy: dict[str, float] = {}
        for job in running:  # a batch's jobs share a worker; it frees when the longest ends
            busy[job.worker or job.id] = max(
                busy.get(job.worker or job.id, 0.0), self.remaining_s(job)
            )
        free_at = list(busy.values())[: max(1, workers)]
        free_at += [0.0] * (max(1, workers) - len(free_at))
        heapq.heapify(free_at)
        starts: dict[str, float] = {}
        for job in waiting:
            start = heapq.heappop(free_at)
            starts[job.id] = start
            heapq.heappush(free_at, start + self.seconds(job.request))
        return starts


def _blend(previous: float | None, sample: float) -> float:
    return sample if previous is None else (1 - LEARNING_RATE) * previous + LEARNING_RATE * sample
