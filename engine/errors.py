"""Typed engine errors: facts for the frontends to put into words, never UI text."""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    """Why a job failed, for metrics and status (the reason text says it to people)."""

    OUT_OF_MEMORY = "out_of_memory"
    TIMED_OUT = "timed_out"
    NAN = "nan"
    STORE = "store"
    INTERNAL = "internal"
    WORKER_LOST = "worker_lost"
    OTHER = "other"


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidRequest(EngineError):
    """A request field is out of range or malformed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TooLarge(InvalidRequest):
    """Each field is in range, but together they ask for more than the limits allow
    (width × height past max_pixels, an upscale of an image already at the largest size)."""


class Blocked(EngineError):
    """A prompt matched a moderation rule."""

    def __init__(self, rule: str, term: str = "") -> None:
        super().__init__(f"blocked by rule {rule!r}")
        self.rule = rule
        self.term = term


class Banned(EngineError):
    """The requester is banned, until a time (epoch seconds) or forever (None)."""

    def __init__(self, until: float | None, reason: str = "") -> None:
        super().__init__(f"banned until {until}")
        self.until = until
        self.reason = reason


class QueueFull(EngineError):
    """The shared queue or the requester's share of it is full."""

    def __init__(
        self, waiting: int, limit: int, is_per_requester: bool = False, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(f"queue full: {waiting} waiting, limit {limit}")
        self.waiting = waiting
        self.limit = limit
        self.is_per_requester = is_per_requester
        self.retry_after_s = retry_after_s


class RateLimited(EngineError):
    """The requester must wait before submitting again."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class QuotaExceeded(EngineError):
    """The requester used their daily image quota."""

    def __init__(self, used: int, limit: int, resets_in_s: float) -> None:
        super().__init__(f"quota exceeded: {used}/{limit}")
        self.used = used
        self.limit = limit
        self.resets_in_s = resets_in_s


class BudgetExceeded(EngineError):
    """pixels × steps × count is above the configured budget."""

    def __init__(self, cost: int, budget: int) -> None:
        super().__init__(f"request cost {cost} exceeds budget {budget}")
        self.cost = cost
        self.budget = budget


class NotFound(EngineError):
    """A job or image id that does not exist (or was deleted)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Forbidden(EngineError):
    """The requester may not do this (cancel someone else's job, delete an image)."""

    def __init__(self, action: str) -> None:
        super().__init__(f"not allowed: {action}")
        self.action = action


class ShuttingDown(EngineError):
    """The engine no longer takes jobs."""


class GenerationFailed(EngineError):
    """The pipeline could not produce a valid image for a job."""

    def __init__(self, reason: str, kind: FailureKind = FailureKind.OTHER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class OutOfMemory(GenerationFailed):
    """The device ran out of memory even with the memory-saving fallbacks."""

    def __init__(self, reason: str = "out of memory") -> None:
        super().__init__(reason, FailureKind.OUT_OF_MEMORY)


class WorkerTimedOut(GenerationFailed):
    """A batch ran past `engine.job_timeout_s`; the worker's watchdog stopped it."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"timed out after {timeout_s:.0f} s", FailureKind.TIMED_OUT)
        self.timeout_s = timeout_s


class WorkerLost(EngineError):
    """The worker running a batch went away (died, lost its network); the jobs run again."""

    def __init__(self, worker: str, reason: str) -> None:
        super().__init__(f"worker {worker} lost: {reason}")
        self.worker = worker
        self.reason = reason


class Interrupted(EngineError):
    """A batch stopped at a step boundary before the VAE decode (cancel, timeout, shutdown)."""


class ModelUnavailable(EngineError):
    """The configured model cannot be loaded; `hint` says what to do."""

    def __init__(self, model: str, reason: str, hint: str) -> None:
        super().__init__(f"model {model!r} unavailable: {reason}. {hint}")
        self.model = model
        self.reason = reason
        self.hint = hint


class ConfigError(EngineError):
    """A config file is malformed or a key is out of range; `key` names the place."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
