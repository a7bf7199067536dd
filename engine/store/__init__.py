"""The store: SQLite records (jobs, images, audit, bans) and image files; the only SQL."""

from engine.store.database import Database
from engine.store.errors import StoreError
from engine.store.images import fts_query
from engine.store.people import ApiToken, Board
from engine.store.records import (
    ACTIVE_STATES,
    FINAL_STATES,
    AuditEntry,
    Ban,
    ImagePage,
    ImageQuery,
    ImageRecord,
    JobRecord,
    JobState,
)
from engine.store.schema import VERSION as SCHEMA_VERSION
from engine.store.starboard import StarboardEntry
from engine.store.store import Store

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "SCHEMA_VERSION",
    "ApiToken",
    "AuditEntry",
    "Ban",
    "Board",
    "Database",
    "ImagePage",
    "ImageQuery",
    "ImageRecord",
    "JobRecord",
    "JobState",
    "StarboardEntry",
    "Store",
    "StoreError",
    "fts_query",
]
