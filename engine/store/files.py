"""Image files in the images folder: written atomically, named by image id, never by prompt."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class ImageFiles:
    """The images folder: temp name, fsync, rename; a reader never sees half a PNG."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, file_name: str) -> Path:
        """Return the path of an image file inside the folder."""
        return self.folder / file_name

    def write(self, file_name: str, data: bytes) -> Path:
        """Write bytes to a temp name, fsync, rename; raise OSError (the caller words it)."""
        final = self.folder / file_name
        temp = self.folder / f".{file_name}.tmp"
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return final

    def remove(self, file_name: str) -> None:
        """Delete one file if it is there."""
        with contextlib.suppress(OSError):
            self.path(file_name).unlink()

    def remove_temp_files(self) -> int:
        """Delete temp files left by an interrupted write; return how many."""
        removed = 0
        for path in self.folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        return removed
