"""The rows the store reads and writes, as frozen dataclasses, and the job states."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life; the store keeps the value as text."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Return whether the job has ended."""
        return self in FINAL_STATES


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobRecord:
    """One job row."""

    id: str
    seq: int
    state: JobState
    requester_key: str
    requester: dict[str, Any]
    request: dict[str, Any]
    origin: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    error: str | None
    seconds: float | None
    delivered_at: float | None
    delivery: dict[str, Any]
    idempotency_key: str | None = None
    worker: str | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image row: everything needed to reproduce it."""

    id: str
    job_id: str
    idx: int
    seed: int
    width: int
    height: int
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    scheduler: str
    model: str
    kind: str
    source: str
    author_id: str
    author_name: str
    seconds: float
    created_at: float
    file_name: str
    parent_image_id: str | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    is_nsfw_channel: bool = False
    is_flagged: bool = False
    message_url: str | None = None
    favourites: int = 0
    is_deleted: bool = False
    model_hash: str = ""
    style: str = ""
    loras: str = ""  # `name:0.8 other:1`: the LoRAs and weights it was made with
    n: int = 0

    @property
    def lora_weights(self) -> tuple[tuple[str, float], ...]:
        """Return the LoRAs it was made with as (name, weight), in the order asked."""
        pairs = (part.rpartition(":") for part in self.loras.split())
        return tuple((name, float(weight)) for name, _, weight in pairs)


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: a rejected prompt or a moderator action."""

    n: int
    at: float
    action: str
    actor: str
    target: str
    rule: str
    prompt: str
    detail: str


@dataclass(frozen=True)
class Ban:
    """A banned requester key; `until` None means forever."""

    user_key: str
    until: float | None
    reason: str
    by: str
    at: float


@dataclass(frozen=True)
class ImageQuery:
    """Gallery filters; `before` is the cursor (an image's `n`)."""

    text: str = ""
    source: str | None = None
    author_id: str | None = None
    author_name: str | None = None
    since: float | None = None
    until: float | None = None
    favourites_of: str | None = None
    style: str | None = None
    include_nsfw: bool = True
    before: int | None = None
    limit: int = 48
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImagePage:
    """One page of images, newest first, and the cursor of the next page (None: no more)."""

    images: list[ImageRecord]
    next_cursor: int | None
