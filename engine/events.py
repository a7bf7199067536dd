"""Events of a job, in order: Queued → Started → Progress… → Finished | Failed | Cancelled.

One bus carries them: per-job streams (a frontend following a job) and global listeners
(metrics, tests), both with an unsubscribe. Everything here runs on the engine's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from engine.store import ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queued:
    """Waiting; `position` 1 runs next."""

    job_id: str
    position: int
    eta_s: float


@dataclass(frozen=True)
class Started:
    """A worker picked the job up."""

    job_id: str
    worker: str = ""


@dataclass(frozen=True)
class Progress:
    """Step `step` of `total` done; `preview_png` every few steps when someone listens."""

    job_id: str
    step: int
    total: int
    preview_png: bytes | None = None


@dataclass(frozen=True)
class Finished:
    """The images are on disk and recorded."""

    job_id: str
    images: tuple[ImageRecord, ...]
    seconds: float


@dataclass(frozen=True)
class Failed:
    """The job ended without images; `reason` is a fact, not UI text."""

    job_id: str
    reason: str
    kind: str = "other"


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled by its requester or a moderator."""

    job_id: str
    by: str


Event = Queued | Started | Progress | Finished | Failed | Cancelled
TERMINAL = (Finished, Failed, Cancelled)
Listener = Callable[[Event], None]


class EventBus:
    """Publish events to the streams of their job and to every listener."""

    def __init__(self) -> None:
        self._streams: dict[str, list[asyncio.Queue[Event]]] = defaultdict(list)
        self._listeners: list[Listener] = []

    def publish(self, event: Event) -> None:
        """Deliver one event; a failing listener is logged, never raised into the engine."""
        for inbox in self._streams.get(event.job_id, ()):
            inbox.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event from now on; return the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def is_watched(self, job_id: str) -> bool:
        """Return whether anyone follows this job now (previews are made only then)."""
        return bool(self._streams.get(job_id))

    def has_streams(self) -> bool:
        """Return whether any job is followed at all."""
        return bool(self._streams)

    async def stream(self, job_id: str, first: Event) -> AsyncIterator[Event]:
        """Yield `first`, then the job's events until its terminal one; unsubscribe at the end."""
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._streams[job_id].append(inbox)
        try:
            yield first
            if isinstance(first, TERMINAL):
                return
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, TERMINAL):
                    return
        finally:
            inboxes = self._streams.get(job_id)
            if inboxes is not None and inbox in inboxes:
                inboxes.remove(inbox)
                if not inboxes:
                    del self._streams[job_id]
