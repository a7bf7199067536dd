"""Remote GPU workers, as the front sees them: Celery + Redis behind the same Worker seam.

`CeleryPool` reads the boxes' heartbeats (one `CeleryWorker` per GPU slot, added as boxes
appear), forwards their progress messages, sends tasks, waits for results and stops jobs.
Celery's own calls block, so they run on a small thread pool; heartbeats and progress use
`redis.asyncio` on the engine's loop. A slot whose box misses its heartbeats for
`engine.worker_timeout_s`, or loses a task it was sent, raises WorkerLost in `run`, and the
engine runs the jobs again elsewhere (bounded by `engine.max_attempts`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import redis.asyncio as aredis
from kombu.exceptions import KombuError

from engine import broker
from engine.config import Settings
from engine.errors import FailureKind, GenerationFailed, Interrupted, WorkerLost
from engine.worker import Batch, BatchResult, ProgressSink, WorkerInfo

log = logging.getLogger(__name__)

POLL_S = 0.5
RESULT_POLL_S = 0.1
START_GRACE_S = 10.0  # a task sent but neither running nor done after this is lost
FORGET_DEAD_S = 300.0


class CeleryWorker:
    """One GPU slot of a remote box."""

    kind = "celery"

    def __init__(self, pool: CeleryPool, box: str, slot: broker.Slot) -> None:
        self.pool = pool
        self.box = box
        self.slot = slot
        self.name = f"{box}/{slot.name}"
        self.last_seen = time.monotonic()
        self.jobs_done = 0
        self._runs: dict[str, str] = {}  # job id → run id of what this slot runs now
        self._task = ""  # the task id this front waits for on this slot

    async def start(self) -> WorkerInfo:
        return self.info()

    def info(self) -> WorkerInfo:
        """Return what the box's last heartbeat said about this slot."""
        age = time.monotonic() - self.last_seen
        return WorkerInfo(
            name=self.name,
            device=self.slot.device,
            dtype=self.slot.dtype,
            models=self.slot.models,
            resident=self.slot.resident,
            max_batch=self.slot.max_batch,
            facts=self.slot.facts,
            problems=self.slot.problems,
            is_alive=self.is_alive(),
            is_free=self.is_free(),
            jobs_done=self.jobs_done,
            last_seen_s=round(age, 1),
            kind=self.kind,
        )

    def is_alive(self) -> bool:
        """Return whether the box's heartbeat is recent and the broker answers."""
        timeout = self.pool.settings.engine.worker_timeout_s
        # After a broker outage every box gets a whole timeout to beat again.
        seen = max(self.last_seen, self.pool.connected_at)
        return self.pool.is_connected and time.monotonic() - seen < timeout

    def is_free(self) -> bool:
        """Return False while the box still runs a task this front is not waiting for."""
        return set(self.slot.tasks) <= {self._task}

    def may_take_work(self) -> bool:
        """Return whether the scheduler may give this slot a batch now."""
        return self.is_alive() and self.is_free()

    async def run(self, batch: Batch, progress: ProgressSink) -> BatchResult:
        """Send the batch to this slot and wait for its result (or its box's death)."""
        if set(batch.job_ids) <= progress.stopped():
            raise Interrupted()
        self._runs = dict(zip(batch.job_ids, batch.run_ids, strict=True))
        self._task = batch.id
        self.pool.expect(batch.id, progress)
        try:
            await self.pool.send(batch, self)
            if progress.stopped():  # cancelled while it was being sent
                self.cancel(progress.stopped())
            data = await self.pool.wait(batch.id, self)
        except WorkerLost:
            self.pool.stop(batch.run_ids)  # should the box come back, it drops this run
            raise
        finally:
            self.pool.forget(batch.id)
            self._runs, self._task = {}, ""
        return self._outcome(data, len(batch.items))

    async def resume(
        self, task_id: str, runs: dict[str, str], progress: ProgressSink
    ) -> BatchResult:
        """Wait for a task sent before the front restarted (it still runs on this slot)."""
        self._runs, self._task = dict(runs), task_id
        self.pool.expect(task_id, progress)
        try:
            data = await self.pool.wait(task_id, self, sent_at=time.monotonic() - START_GRACE_S)
        except WorkerLost:
            self.pool.stop(list(runs.values()))
            raise
        finally:
            self.pool.forget(task_id)
            self._runs, self._task = {}, ""
        return self._outcome(data, len(runs))

    def _outcome(self, data: Any, items: int) -> BatchResult:
        result = outcome(data, items, self.name)
        self.jobs_done += items
        return result

    def cancel(self, job_ids: Collection[str]) -> None:
        """Ask the box to stop these jobs at the next step (no terminate: threads pool)."""
        runs = [self._runs[job_id] for job_id in job_ids if job_id in self._runs]
        if runs:
            self.pool.stop(runs)

    async def close(self) -> None:
        return None


class CeleryPool:
    """The boxes: heartbeats in, tasks out, progress and results back."""

    def __init__(self, settings: Settings, on_slot: Callable[[CeleryWorker], None]) -> None:
        self.settings = settings
        self.on_slot = on_slot
        self.url = settings.broker_url
        self.app = broker.make_app(self.url, "imagine-front")
        self.slots: dict[str, CeleryWorker] = {}
        self.problem = ""
        self.is_connected = False
        self.connected_at = 0.0  # monotonic time the broker last came (back)
        self._redis = aredis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=3)
        self._calls = ThreadPoolExecutor(4, thread_name_prefix="imagine-celery")
        self._progress: dict[str, ProgressSink] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (or say in one line why not), read the heartbeats once, then keep reading."""
        await self._poll()
        if not self.is_connected:
            log.error("remote workers: broker unreachable (%s); will keep trying", self.problem)
        self._tasks = [
            asyncio.create_task(self._keep_polling(), name="imagine-heartbeats"),
            asyncio.create_task(self._listen(), name="imagine-progress"),
        ]

    async def close(self) -> None:
        """Stop reading; close the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        self._calls.shutdown(wait=False, cancel_futures=True)

    # -- heartbeats ------------------------------------------------------------------------

    async def _keep_polling(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self._poll()

    async def _poll(self) -> None:
        try:
            keys = [key async for key in self._redis.scan_iter(match=broker.BOX_KEY + "*")]
            values = await self._redis.mget(keys) if keys else []
        except (redis.RedisError, OSError) as error:
            if self.is_connected:
                log.error("remote workers: broker unreachable: %s", _first_line(error))
            self.is_connected, self.problem = False, _first_line(error)
            return
        if not self.is_connected:
            if self.problem:
                log.warning("remote workers: broker reachable again")
            self.connected_at = time.monotonic()
        self.is_connected, self.problem = True, ""
        for value in values:
            if value is not None:
                self._take(value)
        self._forget_dead()

    def _take(self, value: bytes | str) -> None:
        try:
            beat = broker.Heartbeat.from_json(value)
        except ValueError as error:
            log.warning("ignored a heartbeat: %s", error)
            return
        now = time.monotonic()
        for slot in beat.slots:
            name = f"{beat.box}/{slot.name}"
            worker = self.slots.get(name)
            if worker is None:
                worker = self.slots[name] = CeleryWorker(self, beat.box, slot)
                log.info("remote worker %s on %s serves %s", name, slot.device, slot.models)
                worker.slot, worker.last_seen = slot, now
                self.on_slot(worker)
                continue
            could = worker.may_take_work()
            worker.slot, worker.last_seen = slot, now
            if not could and worker.may_take_work():  # back, or done with an abandoned task
                self.on_slot(worker)

    def _forget_dead(self) -> None:
        now = time.monotonic()
        for name, worker in list(self.slots.items()):
            if now - worker.last_seen > FORGET_DEAD_S:
                del self.slots[name]

    def running_on(self, task_id: str) -> CeleryWorker | None:
        """Return the live slot whose heartbeat says it runs this task, or None."""
        for worker in self.slots.values():
            if worker.is_alive() and task_id in worker.slot.tasks:
                return worker
        return None

    # -- tasks -----------------------------------------------------------------------------

    async def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._calls, function, *args)

    async def send(self, batch: Batch, worker: CeleryWorker) -> None:
        """Send a batch to one slot's box; raise WorkerLost when the broker refuses it."""

        def send() -> None:
            self.app.send_task(
                broker.TASK,
                args=[batch.to_json(), worker.slot.name],
                task_id=batch.id,
                queue=broker.queue_of(worker.box),
                expires=broker.TASK_EXPIRES_S,
                retry=False,
            )

        try:
            await asyncio.wait_for(self._call(send), 15)
        except (redis.RedisError, OSError, TimeoutError, KombuError) as error:
            raise WorkerLost(worker.name, f"could not send: {_first_line(error)}") from error

    async def wait(self, task_id: str, worker: CeleryWorker, sent_at: float | None = None) -> Any:
        """Wait for a task's result; raise WorkerLost when its box dies, restarts, or drops it."""
        watch = _Watch(task_id, worker, self.settings, sent_at)
        while True:
            state, value = await self._state(task_id)
            if state == "SUCCESS":
                await self._forget_result(task_id)
                return value
            if state == "FAILURE":
                raise GenerationFailed(f"worker {worker.name} failed: {_first_line(value)}")
            watch.check()
            await asyncio.sleep(RESULT_POLL_S)

    async def _state(self, task_id: str) -> tuple[str, Any]:
        def read() -> tuple[str, Any]:
            result = self.app.AsyncResult(task_id)
            state = result.state
            return state, result.result if state in ("SUCCESS", "FAILURE") else None

        try:
            return await asyncio.wait_for(self._call(read), 10)
        except (redis.RedisError, OSError, TimeoutError, ValueError):
            return "UNKNOWN", None  # the broker is away: liveness decides

    async def collect(self, task_id: str, items: int) -> BatchResult | None:
        """Return a finished task's result still in Redis (after a front restart), or None.

        Raise GenerationFailed when it finished with a failure.
        """
        state, value = await self._state(task_id)
        if state != "SUCCESS":
            return None
        await self._forget_result(task_id)
        return outcome(value, items, "the worker")

    async def _forget_result(self, task_id: str) -> None:
        # Best effort: a result left behind expires on its own (result_expires).
        with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._call(self.app.backend.forget, task_id), 10)

    def stop(self, run_ids: Collection[str]) -> None:
        """Set the stop keys of these runs (`<job id>:<attempt>`; the box reads them)."""

        async def stop() -> None:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for run_id in run_ids:
                        pipe.set(broker.STOP_KEY + run_id, "1", ex=broker.STOP_TTL_S)
                    await pipe.execute()
            except (redis.RedisError, OSError) as error:
                log.warning("could not stop %s: %s", ", ".join(run_ids), _first_line(error))

        task = asyncio.get_running_loop().create_task(stop())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # -- progress --------------------------------------------------------------------------

    def expect(self, task_id: str, progress: ProgressSink) -> None:
        """Forward this task's progress messages to a sink."""
        self._progress[task_id] = progress

    def forget(self, task_id: str) -> None:
        """Stop forwarding a task's progress."""
        self._progress.pop(task_id, None)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(broker.PROGRESS_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._forward(message["data"])
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError):
                await asyncio.sleep(1.0)  # the broker is away; heartbeats say so

    def _forward(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            sink = self._progress.get(str(data["task"]))
            preview = data.get("preview")
            step, total = int(data["step"]), int(data["total"])
            png = base64.b64decode(preview, validate=True) if preview else None
        except (KeyError, TypeError, ValueError):
            return
        if png is not None and (not png.startswith(b"\x89PNG\r\n\x1a\n") or len(png) > 1 << 20):
            png = None  # a preview is only ever a small PNG
        if sink is not None:
            sink(step, total, png)


class _Watch:
    """Decide when a task waited for is lost: its box's heartbeats stop, its box restarted
    (another process id), it left the box's running list without a result, or it never
    showed up there, or it ran past the watchdog's own bound."""

    def __init__(
        self, task_id: str, worker: CeleryWorker, settings: Settings, sent_at: float | None
    ) -> None:
        now = time.monotonic()
        engine = settings.engine
        self.task_id = task_id
        self.worker = worker
        self.pid = worker.slot.pid
        self.sent_at = now if sent_at is None else sent_at
        self.start_by = self.sent_at + START_GRACE_S + engine.worker_timeout_s
        self.deadline = self.sent_at + engine.job_timeout_s + engine.hang_grace_s + 30
        self.was_listed = False
        self.unlisted_at: float | None = None

    def check(self) -> None:
        """Raise WorkerLost when the task can no longer end with a result."""
        worker, now = self.worker, time.monotonic()
        if now > self.deadline:
            raise WorkerLost(worker.name, "no result in time")
        if not worker.pool.is_connected:
            return  # nothing can be seen while the broker is away; the box may well finish
        if not worker.is_alive():
            raise WorkerLost(worker.name, f"no heartbeat for {now - worker.last_seen:.0f} s")
        if self.pid and worker.slot.pid != self.pid:
            raise WorkerLost(worker.name, "its box restarted")
        if self.task_id in worker.slot.tasks:
            self.was_listed, self.unlisted_at = True, None
        elif self.was_listed:
            self.unlisted_at = self.unlisted_at or now
            if now - self.unlisted_at > 3 * broker.HEARTBEAT_S:  # ended, but no result came
                raise WorkerLost(worker.name, "the task ended without a result")
        elif now > max(self.start_by, worker.pool.connected_at + START_GRACE_S):
            raise WorkerLost(worker.name, "the task never started")


def outcome(data: Any, items: int, worker: str) -> BatchResult:
    """Read a task's JSON result; raise Interrupted or GenerationFailed for what it says."""
    if not isinstance(data, dict):
        raise GenerationFailed(f"{worker} sent no result")
    if data.get("ok"):
        try:
            result = broker.result_from_json(data)
        except ValueError as error:
            raise GenerationFailed(f"{worker} sent a bad result: {error}") from error
        if len(result.images) != items:
            raise GenerationFailed(f"{worker} sent images for other jobs")
        return result
    if data.get("error") == "interrupted":
        raise Interrupted()
    kind = str(data.get("failure", "other"))
    failure = FailureKind(kind) if kind in {k.value for k in FailureKind} else FailureKind.OTHER
    reason = str(data.get("reason", "failed"))
    if data.get("error") == "refused":
        reason = f"{worker} refused the batch: {reason}"
    raise GenerationFailed(reason, failure)


def _first_line(error: Any) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
