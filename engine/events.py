"""Events of a job, in order: Queued → Started → Progress… → Finished | Failed | Cancelled."""

from __future__ import annotations

from dataclasses import dataclass

from engine.store import ImageRecord


@dataclass(frozen=True)
class Queued:
    """Waiting; `position` 1 runs next."""

    job_id: str
    position: int
    eta_s: float


@dataclass(frozen=True)
class Started:
    """The worker picked the job up."""

    job_id: str


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


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled by its requester or a moderator."""

    job_id: str
    by: str


Event = Queued | Started | Progress | Finished | Failed | Cancelled
TERMINAL = (Finished, Failed, Cancelled)
