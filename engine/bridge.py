"""A small synchronous facade over the engine for WSGI threads.

Flask handlers run in waitress's threads; the engine lives on one asyncio loop. Every call
crosses with `asyncio.run_coroutine_threadsafe` (or `call_soon_threadsafe`), never by running
engine code on the caller's thread: asyncio locks refuse to cross loops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from engine.engine import Engine
from engine.errors import NotFound, ShuttingDown
from engine.events import TERMINAL, Event
from engine.jobs import JobView
from engine.library import Library
from engine.preferences import Preferences
from engine.request import GenerationRequest, Requester
from engine.status import EngineStatus
from engine.store import ImageRecord

T = TypeVar("T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class EngineBridge:
    """Call the engine from any thread; each call waits at most `timeout_s`."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, timeout_s: float = 30.0):
        self.engine = engine
        self.loop = loop
        self.timeout_s = timeout_s
        # Stored records, files and favourites need no loop: read them on the calling thread.
        self.library: Library = engine.library

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self.loop.is_closed():
            raise ShuttingDown()
        coroutine = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:  # the loop closed between the check and the call
            coroutine.close()
            raise ShuttingDown() from None
        try:
            return future.result(self.timeout_s)
        except concurrent.futures.CancelledError:
            raise ShuttingDown() from None  # the loop stopped with the call still waiting

    def _call(self, function: Callable[[], T]) -> T:
        if _running_loop() is self.loop:  # already on the engine's loop (the bot's process)
            return function()

        async def wrapper() -> T:
            return function()

        return self._run(wrapper)

    def submit(
        self,
        request: GenerationRequest,
        requester: Requester,
        origin: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Queue a job (raises the engine's typed errors)."""
        return self._run(lambda: self.engine.submit(request, requester, origin, idempotency_key))

    def job(self, job_id: str) -> JobView:
        """Return a job's state (raises NotFound); an ended job is read on this thread."""
        active = self._call(lambda: self._active(job_id))
        if active is not None:
            return active
        stored = self.library.stored_job(job_id)
        if stored is None:
            raise NotFound("job", job_id)
        return stored

    def _active(self, job_id: str) -> JobView | None:
        job = self.engine.table.get(job_id)
        return None if job is None else self.engine.views.view(job)

    def jobs(self, requester_key: str | None = None) -> list[JobView]:
        """Return active jobs in run order."""
        return self._call(lambda: self.engine.jobs(requester_key))

    def cancel(self, job_id: str, by: Requester) -> JobView:
        """Cancel a job (raises Forbidden, NotFound)."""
        return self._run(lambda: self.engine.cancel(job_id, by))

    def status(self) -> EngineStatus:
        """Return the engine's status."""
        return self._call(self.engine.status)

    def delete_image(self, image_id: str, by: Requester) -> None:
        """Delete an image (raises Forbidden, NotFound)."""
        self._run(lambda: self.engine.delete_image(image_id, by))

    def ban(self, user_key: str, until: float | None, reason: str, by: Requester) -> None:
        """Ban a requester key (raises Forbidden unless `by` moderates)."""
        self._run(lambda: self.engine.ban(user_key, until, reason, by))

    def unban(self, user_key: str, by: Requester) -> bool:
        """Lift a ban; False when there was none (raises Forbidden unless `by` moderates)."""
        return self._run(lambda: self.engine.unban(user_key, by))

    def variation_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return a variation request for a stored image."""
        return self._run(lambda: self.engine.variation_request(image_id, by))

    def upscale_request(self, image_id: str, by: Requester) -> GenerationRequest:
        """Return an upscale request for a stored image."""
        return self._run(lambda: self.engine.upscale_request(image_id, by))

    def preferences(self, requester: Requester) -> Preferences:
        """Return a person's own defaults (`/settings`)."""
        return self._call(lambda: self.engine.preferences(requester))

    def set_preferences(self, requester: Requester, preferences: Preferences) -> Preferences:
        """Check and store a person's defaults (raises InvalidRequest naming the field)."""
        return self._run(lambda: self.engine.set_preferences(requester, preferences))

    def image_chain(self, image_id: str) -> list[ImageRecord]:
        """Return an image's ancestry oldest first, ending with it (raises NotFound)."""
        return self._run(lambda: self.engine.image_chain(image_id))

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` on the engine's loop with every event."""
        self._call(lambda: self.engine.listen(listener))

    def watch(
        self,
        job_id: str,
        loop: asyncio.AbstractEventLoop,
        put: Callable[[Event | BaseException | None], None],
    ) -> concurrent.futures.Future[None]:
        """Hand a job's events to `put` on another loop (NotFound first if there is no such
        job; None at the end); cancel the returned future to stop."""

        async def pump() -> None:
            try:
                async for event in self.engine.events(job_id):
                    loop.call_soon_threadsafe(put, event)
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # NotFound, ShuttingDown: the watcher says so
                loop.call_soon_threadsafe(put, error)
                return
            loop.call_soon_threadsafe(put, None)

        if self.loop.is_closed():
            raise ShuttingDown()
        try:
            return asyncio.run_coroutine_threadsafe(pump(), self.loop)
        except RuntimeError:  # the loop closed between the check and the call
            raise ShuttingDown() from None

    def follow(self, job_id: str, timeout_s: float = 600.0) -> Iterator[Event]:
        """Yield a job's events until it ends or `timeout_s` passes."""
        inbox: queue.Queue[Event | BaseException | None] = queue.Queue()

        async def pump() -> None:
            try:
                async for event in self.engine.events(job_id):
                    inbox.put(event)
            except BaseException as error:  # delivered to the waiting thread
                inbox.put(error)
                return
            inbox.put(None)

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    item = inbox.get(timeout=remaining)
                except queue.Empty:
                    return
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, TERMINAL):
                    return
        finally:
            future.cancel()
