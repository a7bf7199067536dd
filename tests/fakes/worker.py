"""A real worker behind a gate, for tests that need jobs to queue up (or to count batches)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Collection

from engine import Batch, BatchResult, ProgressSink, Worker, WorkerInfo


class GatedWorker:
    """Forward to a real worker; while `held()`, a batch waits at the gate before it starts.

    The scheduler sees the worker busy with that batch, so everything submitted meanwhile
    queues up in fair order, as it would behind a long job.
    """

    def __init__(self, inner: Worker) -> None:
        self.inner = inner
        self.name = inner.name
        self.batches: list[Batch] = []
        self._open = asyncio.Event()
        self._open.set()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Close the gate for the block; open it again after."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    async def start(self) -> WorkerInfo:
        return await self.inner.start()

    def info(self) -> WorkerInfo:
        return self.inner.info()

    async def run(self, batch: Batch, progress: ProgressSink) -> BatchResult:
        self.batches.append(batch)
        await self._open.wait()
        return await self.inner.run(batch, progress)

    def cancel(self, job_ids: Collection[str]) -> None:
        self.inner.cancel(job_ids)

    async def close(self) -> None:
        await self.inner.close()


class FlaggingWorker(GatedWorker):
    """A real worker whose images all come back flagged, as a safety checker would flag them."""

    async def run(self, batch: Batch, progress: ProgressSink) -> BatchResult:
        result = await super().run(batch, progress)
        images = tuple(
            tuple(dataclasses.replace(image, is_flagged=True) for image in item)
            for item in result.images
        )
        return dataclasses.replace(result, images=images)
