"""The worker seam: what the scheduler hands a GPU, and what comes back. Plain data only.

A `Worker` drives one device (a `LocalWorker` thread here, a Celery worker slot on another
box). The engine builds each `Batch` on its loop from stored requests (init images and masks
as PNG bytes, never PIL objects or live jobs), so a batch can cross a process or a network as
JSON; results come back as PNG bytes plus facts per image. The worker calls `progress` on the
engine's loop.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from engine.loras import MAX_LORAS, WEIGHT_MAX, WEIGHT_MIN
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
    attempt: int = 1

    @property
    def run_id(self) -> str:
        """Return `<job id>:<attempt>`: one run of one job (stops and results name it)."""
        return f"{self.job_id}:{self.attempt}"


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
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight): each box resolves its own

    @property
    def job_ids(self) -> tuple[str, ...]:
        """Return the jobs in this batch, in order."""
        return tuple(item.job_id for item in self.items)

    @property
    def run_ids(self) -> tuple[str, ...]:
        """Return `<job id>:<attempt>` of each job in this batch."""
        return tuple(item.run_id for item in self.items)

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
        values["loras"] = _loras_from_json(values.get("loras", ()))
        return cls(**values, items=items)


KINDS = ("txt2img", "variation", "upscale", "img2img", "inpaint", "outpaint")
SCHEDULER_NAMES = ("DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM")
MAX_ITEMS = 16
MAX_IMAGE_BYTES = 50 * 1024 * 1024


def check_batch(
    batch: Batch, models: Collection[str], loras: Mapping[str, Collection[str]] | None = None
) -> None:
    """Refuse a batch from the network that a front would never build; ValueError names why.

    A box validates what it is sent like any request: ranges, kinds, its own models, its own
    LoRAs (`loras`: name → the models each fits, empty for all) and their weights, sizes of
    the images in it (decoded later under Pillow's decompression-bomb limit).
    """
    rules: list[tuple[str, bool]] = [
        ("model", batch.model in models),
        ("loras", _loras_ok(batch, loras or {})),
        ("kind", batch.kind in KINDS),
        ("scheduler", batch.scheduler in SCHEDULER_NAMES),
        ("width", _size_ok(batch.width)),
        ("height", _size_ok(batch.height)),
        ("steps", isinstance(batch.steps, int) and 1 <= batch.steps <= 500),
        ("guidance", isinstance(batch.guidance, int | float) and 0 <= batch.guidance <= 50),
        ("strength", isinstance(batch.strength, int | float) and 0 < batch.strength <= 1),
        ("items", 1 <= len(batch.items) <= MAX_ITEMS),
        ("preview_every_steps", isinstance(batch.preview_every_steps, int)),
    ]
    for item in batch.items:
        rules += [
            ("seeds", 1 <= len(item.seeds) <= 4 and all(0 <= s < 2**32 for s in item.seeds)),
            ("prompt", isinstance(item.prompt, str) and len(item.prompt) <= 100_000),
            ("negative_prompt", isinstance(item.negative_prompt, str)),
            ("init_png", item.init_png is None or len(item.init_png) <= MAX_IMAGE_BYTES),
            ("mask_png", item.mask_png is None or len(item.mask_png) <= MAX_IMAGE_BYTES),
        ]
    for name, is_ok in rules:
        if not is_ok:
            raise ValueError(f"batch {name} out of range or not served here")


def _loras_ok(batch: Batch, served: Mapping[str, Collection[str]]) -> bool:
    names = [name for name, _ in batch.loras]
    if len(names) > MAX_LORAS or len(set(names)) != len(names):
        return False
    return all(
        name in served
        and (not served[name] or batch.model in served[name])
        and WEIGHT_MIN <= weight <= WEIGHT_MAX
        for name, weight in batch.loras
    )


def _loras_from_json(raw: Any) -> tuple[tuple[str, float], ...]:
    """Read [[name, weight], ...]; raise ValueError on any other shape (JSON from the network)."""
    if not isinstance(raw, list | tuple):
        raise ValueError("batch loras: expected a list")
    pairs = []
    for pair in raw:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError("batch loras: expected [name, weight] pairs")
        name, weight = pair
        if not isinstance(name, str) or isinstance(weight, bool):
            raise ValueError("batch loras: expected [name, weight] pairs")
        if not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError("batch loras: a weight is not a number")
        pairs.append((name, float(weight)))
    return tuple(pairs)


def _size_ok(value: Any) -> bool:
    return isinstance(value, int) and 8 <= value <= 4096 and value % 8 == 0


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
    is_free: bool = True  # False while a remote slot still finishes a task given up on
    jobs_done: int = 0
    last_seen_s: float | None = None
    kind: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    def can_serve(self, model: str) -> bool:
        """Return whether this worker may be given jobs for a model."""
        return self.is_alive and self.is_free and model in self.models


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
