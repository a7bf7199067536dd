"""The store's one error type."""

from __future__ import annotations


class StoreError(Exception):
    """The store could not complete a write (disk full, read-only, locked too long)."""
