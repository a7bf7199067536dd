"""What the front and the worker boxes share over Redis: the Celery app, names and messages.

Celery 5.7 with Redis as broker and result backend, JSON only (nothing from the network is
ever unpickled). Redis is a pipe: the front's SQLite is the truth, and Redis runs without
persistence. Besides Celery's own keys, three things travel:

- `imagine:box:<name>`: a box's heartbeat, refreshed every `HEARTBEAT_S`, expiring after
  `engine.worker_timeout_s`: its slots (one per GPU), the models each serves and holds, and the
  tasks each runs now.
- `imagine:progress`: a pub/sub channel of {task, job_ids, step, total, preview (base64)}.
- `imagine:stop:<job id>:<attempt>`: set by the front to stop one run of a job; a box reads it
  between steps (a job run again elsewhere after its box was given up has a new attempt).

A task is `imagine.run(batch, slot)`, its id `<first job id>:<attempt>`, sent to the queue of
the one box the front chose (`imagine.box.<name>`), so fair order is decided in SQLite.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend
from PIL import Image

from engine.models import ModelFacts
from engine.worker import BatchResult, GeneratedImage

TASK = "imagine.run"
BOX_KEY = "imagine:box:"
PROGRESS_CHANNEL = "imagine:progress"
STOP_KEY = "imagine:stop:"
STOP_TTL_S = 3600
HEARTBEAT_S = 1.0
TASK_EXPIRES_S = 120.0


def queue_of(box: str) -> str:
    """Return the queue only that box consumes."""
    return f"imagine.box.{box}"


class PolledRedisBackend(RedisBackend):
    """Celery's Redis result backend, read by polling each task's key.

    The stock backend subscribes to a pub/sub channel per task sent (for `AsyncResult.get`),
    and after a Redis restart its re-subscribe retries could hold the front's threads; the
    front only ever polls a result by task id, with a bound on each call, so it needs none.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def forget(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
        self.client.delete(self.get_key_for_task(task_id))


def make_app(broker_url: str, name: str = "imagine") -> Celery:
    """Return a Celery app for this broker: JSON only, one task at a time per slot, early ack."""
    backend = f"{PolledRedisBackend.__module__}:{PolledRedisBackend.__name__}+{broker_url}"
    app = Celery(name, broker=broker_url, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=False,  # early ack: a box that dies loses its task; the front requeues
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_expires=86400,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_default_queue="imagine.unrouted",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={"socket_connect_timeout": 5, "socket_timeout": 10},
        redis_socket_connect_timeout=5,
        redis_socket_timeout=10,
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
    )
    return app


@dataclass(frozen=True)
class Slot:
    """One GPU of a box, as its heartbeat tells it; `name` is what a task names to run there."""

    name: str
    device: str
    pid: int = 0
    models: tuple[str, ...] = ()
    resident: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    max_batch: int = 1
    dtype: str = ""
    facts: tuple[ModelFacts, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    """A box's state, every second."""

    box: str
    host: str
    pid: int
    slots: tuple[Slot, ...]
    jobs_done: int = 0
    at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Return the heartbeat as JSON text."""
        data = asdict(self)
        for slot, raw in zip(self.slots, data["slots"], strict=True):
            raw["facts"] = [facts.to_dict() for facts in slot.facts]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Heartbeat:
        """Read a heartbeat; raise ValueError on anything that is not one."""
        try:
            data = json.loads(text)
            slots = tuple(
                Slot(
                    name=str(raw["name"]),
                    device=str(raw["device"]),
                    pid=int(raw.get("pid", 0)),
                    models=tuple(str(m) for m in raw.get("models", ())),
                    resident=tuple(str(m) for m in raw.get("resident", ())),
                    tasks=tuple(str(t) for t in raw.get("tasks", ())),
                    max_batch=int(raw.get("max_batch", 1)),
                    dtype=str(raw.get("dtype", "")),
                    facts=tuple(ModelFacts.from_dict(f) for f in raw.get("facts", ())),
                    problems=tuple(str(p) for p in raw.get("problems", ())),
                )
                for raw in data["slots"]
            )
            return cls(
                box=str(data["box"]),
                host=str(data["host"]),
                pid=int(data["pid"]),
                slots=slots,
                jobs_done=int(data.get("jobs_done", 0)),
                at=float(data.get("at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a heartbeat: {error}") from error


def result_json(result: BatchResult) -> dict[str, Any]:
    """Return a batch's result as the task's JSON return value (PNG bytes as base64)."""
    return {
        "ok": True,
        "images": [
            [
                {
                    "data": base64.b64encode(as_png(image)).decode("ascii"),
                    "seed": image.seed,
                    "width": image.width,
                    "height": image.height,
                    "is_flagged": image.is_flagged,
                }
                for image in item
            ]
            for item in result.images
        ],
        "seconds": result.seconds,
        "facts": result.facts.to_dict(),
    }


def as_png(image: GeneratedImage) -> bytes:
    """Return an image's PNG bytes (a box encodes its raw pixels before they travel)."""
    if image.format == "png":
        return image.data
    pixels = Image.frombytes("RGB", (image.width, image.height), image.data)
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def result_from_json(data: Any) -> BatchResult:
    """Read a task's successful result; raise ValueError on anything else."""
    try:
        images = tuple(
            tuple(
                GeneratedImage(
                    data=base64.b64decode(image["data"], validate=True),
                    seed=int(image["seed"]),
                    width=int(image["width"]),
                    height=int(image["height"]),
                    format="png",  # from the network: only ever PNG, checked again on save
                    is_flagged=image.get("is_flagged"),
                )
                for image in item
            )
            for item in data["images"]
        )
        return BatchResult(images, float(data["seconds"]), ModelFacts.from_dict(data["facts"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a batch result: {error}") from error


def failure_json(kind: str, reason: str, failure: str = "other") -> dict[str, Any]:
    """Return a batch's failure as the task's JSON return value."""
    return {"ok": False, "error": kind, "reason": reason, "failure": failure}
