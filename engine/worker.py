"""The worker seam: what the scheduler hands a GPU, and what comes back. Plain data only.

A `Worker` drives one device (a `LocalWorker` thread here, a Celery worker slot on another
box). The engine builds each `Batch` on its loop from stored requests (init images and masks
as PNG bytes, never PIL objects or live jobs), so a batch can cross a process or a network as
JSON; results come back as PNG bytes plus facts per image. The worker calls `progress` on the
engine's loop.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from engine.models import ModelFacts


@dataclass(frozen=True)
class BatchItem:
    """One job's part of a batch: its prompt and one seed per image."""

    job_id: str
    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    init_png: bytes | None = None
    mask_png: bytes | None = None


@dataclass(frozen=True)
class Batch:
    """Jobs that agree on everything but prompt, seed and init image: one pipeline call."""

    id: str
    model: str
    kind: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    items: tuple[BatchItem, ...]
    strength: float = 1.0
    preview_every_steps: int = 5

    @property
    def job_ids(self) -> tuple[str, ...]:
        """Return the jobs in this batch, in order."""
        return tuple(item.job_id for item in self.items)

    @property
    def image_count(self) -> int:
        """Return how many images the call makes."""
        return sum(len(item.seeds) for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """Return JSON-ready data (image bytes as base64)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "items"}
        data["items"] = [_item_json(item) for item in self.items]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        """Rebuild from `to_json` output; raise ValueError (with the key) on anything else."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown batch keys: {sorted(unknown)}")
        items = tuple(_item_from_json(item) for item in data.get("items", ()))
        values = {k: v for k, v in data.items() if k != "items"}
        return cls(**values, items=items)


def _item_json(item: BatchItem) -> dict[str, Any]:
    data = {f.name: getattr(item, f.name) for f in fields(item)}
    data["seeds"] = list(item.seeds)
    for key in ("init_png", "mask_png"):
        value = data[key]
        data[key] = None if value is None else base64.b64encode(value).decode("ascii")
    return data


def _item_from_json(data: dict[str, Any]) -> BatchItem:
    values = dict(data)
    for key in ("init_png", "mask_png"):
        value = values.get(key)
        values[key] = None if value is None else base64.b64decode(value, validate=True)
    values["seeds"] = tuple(int(seed) for seed in values.get("seeds", ()))
    return BatchItem(**values)


@dataclass(frozen=True)
class GeneratedImage:
    """One output image, its seed and the safety checker's verdict.

    `data` is PNG bytes (no metadata yet) from a worker elsewhere, or raw 8-bit RGB rows from
    a worker in this process: the engine's I/O thread encodes those, so PNG compression never
    holds the GPU thread (140 ms for a 768 px image on a slow core).
    """

    data: bytes
    seed: int
    width: int
    height: int
    format: str = "png"
    is_flagged: bool | None = None


@dataclass(frozen=True)
class BatchResult:
    """Images per batch item (in item order), and what the call cost."""

    images: tuple[tuple[GeneratedImage, ...], ...]
    seconds: float
    facts: ModelFacts
    retries: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself: where it runs and which models it serves."""

    name: str
    device: str
    dtype: str = ""
    models: tuple[str, ...] = ()
    resident: tuple[str, ...] = ()
    slots: int = 1
    max_batch: int = 1
    facts: tuple[ModelFacts, ...] = ()
    problems: tuple[str, ...] = ()
    is_alive: bool = True
    jobs_done: int = 0
    last_seen_s: float | None = None
    kind: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    def can_serve(self, model: str) -> bool:
        """Return whether this worker may be given jobs for a model."""
        return self.is_alive and model in self.models


class ProgressSink(Protocol):
    """Where a worker reports steps; called on the engine's loop."""

    def __call__(self, step: int, total: int, preview_png: bytes | None) -> None:
        """Report that `step` of `total` steps are done (with a preview now and then)."""

    def wants_preview(self) -> bool:
        """Return whether anyone watches, so a preview is worth making (thread-safe)."""

    def stopped(self) -> set[str]:
        """Return the batch's jobs already stopped before the worker began (cancelled early)."""


class Worker(Protocol):
    """The only thing the scheduler talks to."""

    name: str

    async def start(self) -> WorkerInfo:
        """Get ready (load models); return what this worker serves."""

    def info(self) -> WorkerInfo:
        """Return what the worker serves and holds now."""

    async def run(self, batch: Batch, progress: ProgressSink) -> BatchResult:
        """Run one batch; raise Interrupted, GenerationFailed, WorkerTimedOut or WorkerLost."""

    def cancel(self, job_ids: Collection[str]) -> None:
        """Ask the running batch to stop these jobs at the next step (no VAE decode)."""

    async def close(self) -> None:
        """Stop, dropping the models."""
