"""The store: one SQLite database and the images folder under one data directory.

The only place with SQL. `Store` joins the tables' classes (jobs, images, moderation) over one
`Database` (connections, migrations, retried transactions) and the image files. Every method is
safe from any thread; the engine calls the writing ones on its I/O thread, never on the loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.store.database import Database
from engine.store.errors import StoreError
from engine.store.files import ImageFiles
from engine.store.images import ImageRows
from engine.store.jobs import JobRows
from engine.store.moderation import ModerationRows
from engine.store.people import PeopleRows
from engine.store.preferences import PreferenceRows
from engine.store.starboard import StarboardRows

DB_NAME = "imagine.sqlite3"


class Store(JobRows, ImageRows, ModerationRows, StarboardRows, PreferenceRows, PeopleRows):
    """SQLite records plus the image files under one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], busy_timeout_s: float = 10.0) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))  # settings give it absolute already
        self.images_dir = self.data_dir / "images"
        self.db_path = self.data_dir / DB_NAME
        self.db = Database(self.db_path, busy_timeout_s)
        self.files = ImageFiles(self.images_dir)
        self.schema_version = 0

    @property
    def busy_timeout_s(self) -> float:
        """Return how long a write waits for the lock before its bounded retry."""
        return self.db.busy_timeout_s

    @busy_timeout_s.setter
    def busy_timeout_s(self, value: float) -> None:
        self.db.busy_timeout_s = value

    @property
    def write_attempts(self) -> int:
        """Return how many times a locked write is tried."""
        return self.db.write_attempts

    @write_attempts.setter
    def write_attempts(self, value: int) -> None:
        self.db.write_attempts = value

    def open(self) -> None:
        """Create the folders, bring the schema up to date, remove temp files of a crash."""
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.schema_version = self.db.open()
        self.files.remove_temp_files()

    def close(self) -> None:
        """Close every thread's connection."""
        self.db.close()

    def integrity_check(self) -> str:
        """Return SQLite's integrity check verdict ('ok' when healthy)."""
        return self.db.pragma("integrity_check")

    def quick_check(self) -> str:
        """Return SQLite's quick check verdict ('ok' when healthy); cheaper than integrity_check."""
        return self.db.pragma("quick_check")

    def image_path(self, file_name: str) -> Path:
        """Return the path of an image file inside the images folder."""
        return self.files.path(file_name)

    def write_image_file(self, file_name: str, data: bytes) -> Path:
        """Write an image file atomically; raise StoreError naming the cause."""
        try:
            return self.files.write(file_name, data)
        except OSError as error:
            raise StoreError(f"cannot write image: {error.strerror or error}") from error

    def remove_temp_files(self) -> int:
        """Delete temp files left by an interrupted write; return how many."""
        return self.files.remove_temp_files()

    def delete_image(self, image_id: str) -> bool:
        """Hide an image from the gallery and remove its file; False if it was not there."""
        image = self.hide_image(image_id)
        if image is None:
            return False
        self.files.remove(image.file_name)
        return True
