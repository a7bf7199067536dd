"""A worker box: `python -m engine worker --config PATH` on a machine with GPUs.

One `LocalWorker` per device (`engine.devices`), each loading its models once at start in this
process (CUDA and fork do not mix: Celery runs its threads pool, one slot per GPU, prefetch 1).
Tasks arrive on this box's own queue as JSON, are checked like any request, run on the slot
the front chose, and return PNG bytes (base64) or a failure; steps and previews go out on a
Redis channel; a stop key set by the front stops a job at the next step. A heartbeat every
second says what each slot serves, holds and runs, so the front dispatches only to free
slots and sees a dead box within `engine.worker_timeout_s`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from typing import Any

import redis

from engine import broker
from engine.config import ConfigError, Settings
from engine.errors import GenerationFailed, Interrupted, ModelUnavailable, WorkerTimedOut
from engine.local import LocalWorker, local_workers
from engine.models import ModelRegistry
from engine.worker import Batch, check_batch

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25
STOP_POLL_S = 0.2
BOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # a queue name and a Redis key


class _Progress:
    """Steps of one task, to the front over Redis (queued: a slow Redis never stalls a step)."""

    def __init__(self, box: Box, task_id: str, batch: Batch) -> None:
        self.box = box
        self.task_id = task_id
        self.job_ids = list(batch.job_ids)
        self.run_ids = dict(zip(batch.job_ids, batch.run_ids, strict=True))
        self._last = 0.0

    def __call__(self, step: int, total: int, preview_png: bytes | None) -> None:
        now = time.monotonic()
        if preview_png is None and step < total and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        message = {
            "task": self.task_id,
            "job_ids": self.job_ids,
            "step": step,
            "total": total,
            "preview": base64.b64encode(preview_png).decode("ascii") if preview_png else None,
        }
        self.box.publish(json.dumps(message))

    def wants_preview(self) -> bool:
        return True  # the front forwards previews to whoever watches

    def stopped(self) -> set[str]:
        return self.box.stopped(self.run_ids)


class Box:
    """This machine's GPUs as task slots for the front."""

    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.engine.box_name or socket.gethostname()
        if not BOX_NAME.fullmatch(self.name):
            raise ConfigError(
                "engine.box_name",
                f"expected 1–63 letters, digits, '.', '_' or '-', got {self.name!r}",
            )
        self.registry = ModelRegistry.from_settings(settings)
        self.slots: dict[str, LocalWorker] = {
            worker.name: worker
            for worker in local_workers(settings.engine, self.registry, settings.data_path)
        }
        self.url = settings.broker_url
        self.app = broker.make_app(self.url, f"imagine-box-{self.name}")
        self.redis = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        self.loop = asyncio.new_event_loop()
        self._running: dict[str, tuple[str, dict[str, str]]] = {}  # task → slot, job → run id
        self._outbox: queue.Queue[str] = queue.Queue(maxsize=1000)
        self._stop = threading.Event()
        self._jobs_done = 0

        def run(task: Any, batch_json: dict[str, Any], slot: str) -> dict[str, Any]:
            return self.run_task(str(task.request.id), batch_json, slot)

        self.app.task(name=broker.TASK, bind=True)(run)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load every slot's models, then start heartbeats, progress and stop polling."""
        threading.Thread(target=self.loop.run_forever, name="box-loop", daemon=True).start()
        for slot, worker in self.slots.items():
            try:
                asyncio.run_coroutine_threadsafe(worker.start(), self.loop).result()
            except ModelUnavailable as error:
                worker.fail_all(f"model unavailable: {error.reason}")
                log.error("slot %s serves nothing: %s", slot, error)
            info = worker.info()
            log.warning(
                "box %s slot %s on %s serves %s", self.name, slot, info.device,
                ", ".join(info.models) or "nothing",
            )  # fmt: skip
        for target, name in (
            (self._beat, "box-heartbeat"),
            (self._send_progress, "box-progress"),
            (self._poll_stops, "box-stops"),
        ):
            threading.Thread(target=target, name=name, daemon=True).start()

    def serve(self) -> None:
        """Run the Celery worker (threads pool, one slot per GPU) until it is stopped."""
        argv = [
            "worker",
            "--pool=threads",
            f"--concurrency={len(self.slots)}",
            "--prefetch-multiplier=1",
            f"--queues={broker.queue_of(self.name)}",
            f"--hostname={self.name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",  # Celery's own INFO lines would log whole results
        ]
        logging.getLogger("engine").setLevel(logging.INFO)  # this box's tasks, one line each
        try:
            self.app.worker_main(argv)
        finally:
            self.close()

    def close(self) -> None:
        """Stop heartbeats (the front sees this box gone) and drop the models."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(broker.BOX_KEY + self.name)
        for worker in self.slots.values():
            asyncio.run_coroutine_threadsafe(worker.close(), self.loop).result(60)

    # -- the task --------------------------------------------------------------------------

    def run_task(self, task_id: str, batch_json: dict[str, Any], slot: str) -> dict[str, Any]:
        """Run one batch (a Celery pool thread); return its images or its failure, as JSON."""
        worker = self.slots.get(slot)
        try:
            if worker is None:
                raise ValueError(f"no slot {slot!r} on box {self.name}")
            batch = Batch.from_json(batch_json)
            check_batch(batch, worker.info().models, worker.served_loras())
        except (ValueError, TypeError) as error:
            log.warning("refused task %s: %s", task_id, error)
            return broker.failure_json("refused", str(error))
        self._running[task_id] = (slot, dict(zip(batch.job_ids, batch.run_ids, strict=True)))
        try:
            coroutine = worker.run(batch, _Progress(self, task_id, batch))
            result = asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
        except Interrupted:
            return broker.failure_json("interrupted", "stopped")
        except WorkerTimedOut as error:
            return broker.failure_json("failed", error.reason, str(error.kind))
        except GenerationFailed as error:
            return broker.failure_json("failed", error.reason, str(error.kind))
        except Exception as error:
            log.exception("task %s failed", task_id)
            return broker.failure_json("failed", f"internal error: {type(error).__name__}")
        finally:
            self._running.pop(task_id, None)
        self._jobs_done += len(batch.items)
        log.info("task %s done: %s", task_id, ", ".join(batch.run_ids))
        return broker.result_json(result)

    # -- talking to the front --------------------------------------------------------------

    def publish(self, message: str) -> None:
        """Queue a progress message (dropped when Redis is far behind: progress is best effort)."""
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(message)

    def stopped(self, run_ids: dict[str, str]) -> set[str]:
        """Return which of these jobs (job id → run id) the front asked to stop."""
        try:
            values = self.redis.mget([broker.STOP_KEY + run for run in run_ids.values()])
        except redis.RedisError:
            return set()
        return {job for job, value in zip(run_ids, values, strict=True) if value}

    def heartbeat(self) -> broker.Heartbeat:
        """Return what this box says about itself now."""
        slots = []
        for slot, worker in self.slots.items():
            info = worker.info()
            tasks = tuple(t for t, (s, _) in list(self._running.items()) if s == slot)
            slots.append(
                broker.Slot(
                    name=slot,
                    device=info.device,
                    pid=os.getpid(),
                    models=info.models,
                    resident=info.resident,
                    tasks=tasks,
                    max_batch=info.max_batch,
                    dtype=info.dtype,
                    facts=info.facts,
                    problems=info.problems,
                )
            )
        return broker.Heartbeat(
            self.name, socket.gethostname(), os.getpid(), tuple(slots), self._jobs_done, time.time()
        )

    def _beat(self) -> None:
        timeout = max(2, int(self.settings.engine.worker_timeout_s))
        was_down = False
        while not self._stop.is_set():
            try:
                self.redis.set(broker.BOX_KEY + self.name, self.heartbeat().to_json(), ex=timeout)
                if was_down:
                    log.warning("broker reachable again")
                was_down = False
            except redis.RedisError as error:
                if not was_down:
                    log.error("broker unreachable: %s", error)
                was_down = True
            self._stop.wait(broker.HEARTBEAT_S)

    def _send_progress(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            with contextlib.suppress(redis.RedisError):  # progress is best effort
                self.redis.publish(broker.PROGRESS_CHANNEL, message)

    def _poll_stops(self) -> None:
        while not self._stop.is_set():
            for slot, run_ids in list(self._running.values()):
                stopped = self.stopped(run_ids)
                if stopped:
                    self.slots[slot].cancel(stopped)
            self._stop.wait(STOP_POLL_S)
