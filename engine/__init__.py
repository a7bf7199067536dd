"""imagine's engine: requests, queue, limits, moderation, workers, models, store and config.

Importing it never imports torch: only `engine.local.LocalWorker` loads `engine.pipeline`, on
its own thread, when it starts.
"""

from engine.bridge import EngineBridge
from engine.config import (
    BUILTIN_DEMO,
    BUILTIN_TINY,
    SD21,
    Overrides,
    Settings,
    StyleSettings,
    WebSettings,
)
from engine.config import load as load_settings
from engine.config import try_reload as reload_settings
from engine.derive import upscale_size
from engine.engine import Engine
from engine.errors import (
    Banned,
    Blocked,
    BudgetExceeded,
    ConfigError,
    EngineError,
    FailureKind,
    Forbidden,
    GenerationFailed,
    Interrupted,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    OutOfMemory,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
    TooLarge,
    WorkerLost,
    WorkerTimedOut,
)
from engine.events import TERMINAL, Cancelled, Event, Failed, Finished, Progress, Queued, Started
from engine.intake import Pending
from engine.jobs import EndReason, JobView
from engine.library import Library, StoreHealth
from engine.local import LocalWorker, local_workers
from engine.loras import parse as parse_loras
from engine.models import ModelDefaults, ModelFacts, ModelRegistry, ModelSpec
from engine.pngmeta import Parameters, read_parameters
from engine.preferences import Delivery, Preferences, steps_ceiling
from engine.request import (
    ASPECTS,
    SCHEDULERS,
    SEED_MAX,
    GenerationRequest,
    Kind,
    Requester,
    aspect_size,
    normalise_text,
)
from engine.starboard import Starboard, StarredMessage
from engine.status import EngineStatus, LoraStatus, ModelStatus, StyleStatus, WorkerStatus
from engine.store import (
    ApiToken,
    AuditEntry,
    Ban,
    Board,
    ImagePage,
    ImageQuery,
    ImageRecord,
    JobRecord,
    JobState,
    Store,
    StoreError,
)
from engine.worker import (
    Batch,
    BatchItem,
    BatchResult,
    GeneratedImage,
    ProgressSink,
    Worker,
    WorkerInfo,
)

__all__ = [
    "ASPECTS",
    "BUILTIN_DEMO",
    "BUILTIN_TINY",
    "SCHEDULERS",
    "SD21",
    "SEED_MAX",
    "TERMINAL",
    "ApiToken",
    "AuditEntry",
    "Ban",
    "Banned",
    "Batch",
    "BatchItem",
    "BatchResult",
    "Blocked",
    "Board",
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "Delivery",
    "EndReason",
    "Engine",
    "EngineBridge",
    "EngineError",
    "EngineStatus",
    "Event",
    "Failed",
    "FailureKind",
    "Finished",
    "Forbidden",
    "GeneratedImage",
    "GenerationFailed",
    "GenerationRequest",
    "ImagePage",
    "ImageQuery",
    "ImageRecord",
    "Interrupted",
    "InvalidRequest",
    "JobRecord",
    "JobState",
    "JobView",
    "Kind",
    "Library",
    "LocalWorker",
    "LoraStatus",
    "ModelDefaults",
    "ModelFacts",
    "ModelRegistry",
    "ModelSpec",
    "ModelStatus",
    "ModelUnavailable",
    "NotFound",
    "OutOfMemory",
    "Overrides",
    "Parameters",
    "Pending",
    "Preferences",
    "Progress",
    "ProgressSink",
    "QueueFull",
    "Queued",
    "QuotaExceeded",
    "RateLimited",
    "Requester",
    "Settings",
    "ShuttingDown",
    "Starboard",
    "StarredMessage",
    "Started",
    "Store",
    "StoreError",
    "StoreHealth",
    "StyleSettings",
    "StyleStatus",
    "TooLarge",
    "WebSettings",
    "Worker",
    "WorkerInfo",
    "WorkerLost",
    "WorkerStatus",
    "WorkerTimedOut",
    "aspect_size",
    "load_settings",
    "local_workers",
    "normalise_text",
    "parse_loras",
    "read_parameters",
    "reload_settings",
    "steps_ceiling",
    "upscale_size",
]
