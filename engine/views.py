"""What frontends see of active jobs: views with queue position and ETA, and Queued events."""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import NotFound
from engine.estimates import Estimates
from engine.events import Cancelled, Event, EventBus, Failed, Finished, Progress, Queued, Started
from engine.jobs import Job, JobTable, JobView
from engine.library import Library
from engine.offload import Offload
from engine.store import JobState


class Views:
    """Build job views and keep followers told of their place in line."""

    def __init__(
        self,
        table: JobTable,
        estimates: Estimates,
        bus: EventBus,
        library: Library,
        offload: Offload,
        workers: Callable[[], int],
    ) -> None:
        self.table = table
        self.estimates = estimates
        self.bus = bus
        self.library = library
        self.offload = offload
        self.workers = workers

    def _starts(self) -> dict[str, float]:
        return self.estimates.start_times(
            self.table.waiting(), self.table.running(), self.workers()
        )

    def view(self, job: Job) -> JobView:
        """Return a job's view; a waiting job gets its 1-based position and an ETA."""
        if job.state != JobState.QUEUED:
            return _view(job, None, None)
        order = [other.id for other in self.table.waiting()]
        if job.id not in order:  # accepted, not yet durable
            return _view(job, None, None)
        return _view(job, order.index(job.id) + 1, self._starts().get(job.id))

    def active(self, requester_key: str | None = None) -> list[JobView]:
        """Return active jobs: running first, then waiting in run order."""
        starts = self._starts()
        views = [_view(job, None, None) for job in self.table.running()]
        views += [
            _view(job, position, starts.get(job.id))
            for position, job in enumerate(self.table.waiting(), start=1)
        ]
        if requester_key is None:
            return views
        return [view for view in views if view.requester.key == requester_key]

    def job(self, job_id: str) -> JobView:
        """Return a job's view: active from memory, else from the store (any thread); NotFound."""
        job = self.table.get(job_id)
        if job is not None:
            return self.view(job)
        view = self.library.stored_job(job_id)
        if view is None:
            raise NotFound("job", job_id)
        return view

    async def fetch(self, job_id: str) -> JobView:
        """Return a job's view, reading the store off the loop; raise NotFound."""
        job = self.table.get(job_id)
        if job is not None:
            return self.view(job)
        view = await self.offload.run(self.library.stored_job, job_id)
        if view is None:
            raise NotFound("job", job_id)
        return view

    async def final_event(self, job_id: str) -> Event:
        """Return the terminal event of an ended job, rebuilt from the store."""
        view = await self.fetch(job_id)
        if view.state == JobState.DONE:
            images = await self.offload.run(self.library.images_of_job, job_id)
            return Finished(job_id, tuple(images), view.seconds or 0.0)
        if view.state == JobState.CANCELLED:
            return Cancelled(job_id, (view.error or "").removeprefix("cancelled by "))
        return Failed(job_id, view.error or "interrupted")

    def current_event(self, job: Job) -> Event:
        """Return the event that says where a job is now (a new follower's first event)."""
        if job.state == JobState.RUNNING:
            if job.step:
                return Progress(job.id, job.step, job.total, None)
            return Started(job.id, job.worker or "")
        view = self.view(job)
        return Queued(job.id, view.position or 0, view.eta_s or 0.0)

    def publish_positions(self) -> None:
        """Tell every follower of a waiting job its place and ETA (after the line changed)."""
        if not self.bus.has_streams():
            return
        starts = self._starts()
        for position, job in enumerate(self.table.waiting(), start=1):
            if self.bus.is_watched(job.id):
                self.bus.publish(Queued(job.id, position, round(starts.get(job.id, 0.0), 1)))


def _view(job: Job, position: int | None, eta: float | None) -> JobView:
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
        worker=job.worker,
    )
