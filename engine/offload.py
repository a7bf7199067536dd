"""The engine's I/O thread: SQLite writes, PNG files and reads that must stay off the loop.

One thread, so writes keep their order; `spawn` runs a write in the background and keeps the
task until it ends (a failure is logged, the job it belonged to already has its answer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engine.store import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Offload:
    """Run blocking calls on one I/O thread, from the loop."""

    def __init__(self, name: str = "imagine-io") -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the I/O thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def spawn(self, function: Callable[..., Any], *args: Any) -> None:
        """Run a write in the background; a store failure is logged."""

        async def write() -> None:
            try:
                await self.run(function, *args)
            except (StoreError, RuntimeError) as error:
                log.error("store write failed: %s", error)

        self.track(asyncio.create_task(write()))

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task alive until it ends (close waits for it)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every background task."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Finish the background writes, then stop the thread."""
        await self.drain()
        self._executor.shutdown(wait=True)
