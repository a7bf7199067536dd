"""The image library: what frontends read and change in the gallery, safe from any thread.

Gallery pages and search, one image and its file (only plain files inside the images folder),
favourites, a job's stored record, the audit log and the store's health. WSGI threads call it
directly; the bot calls it off its loop (`asyncio.to_thread`). No SQL outside the store.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.jobs import JobView
from engine.request import Requester
from engine.store import (
    ApiToken,
    AuditEntry,
    Board,
    ImagePage,
    ImageQuery,
    ImageRecord,
    JobState,
    Store,
)

FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.png")
TOKEN_PREFIX = "imt_"


@dataclass(frozen=True)
class StoreHealth:
    """The database's quick check and the data folder's free space."""

    state: str
    disk_free_bytes: int


class Library:
    """Read and change the gallery's records and files."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def page(self, query: ImageQuery) -> ImagePage:
        """Return one gallery page, newest first, and the cursor of the next."""
        return self.store.page_images(query)

    def image(self, image_id: str) -> ImageRecord | None:
        """Return an image that is in the gallery, or None."""
        return self.store.image(image_id)

    def images_of_job(self, job_id: str) -> list[ImageRecord]:
        """Return a job's images in order."""
        return self.store.images_of_job(job_id)

    def file_path(self, image: ImageRecord) -> Path | None:
        """Return an image's file only if it is a plain file inside the images folder."""
        if not FILE_NAME.fullmatch(image.file_name):
            return None
        folder = self.store.images_dir.resolve()
        path = self.store.image_path(image.file_name)
        if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
            return None
        return path

    def read(self, image: ImageRecord) -> bytes:
        """Return an image file's bytes; raise OSError when it is gone."""
        path = self.file_path(image)
        if path is None:
            raise FileNotFoundError(image.file_name)
        return path.read_bytes()

    def set_favourite(self, image_id: str, user_key: str, is_on: bool) -> int:
        """Add or remove a favourite; return the image's favourite count."""
        return self.store.set_favourite(image_id, user_key, is_on, self.clock())

    def is_favourite(self, image_id: str, user_key: str) -> bool:
        """Return whether someone favourited an image."""
        return self.store.is_favourite(image_id, user_key)

    def create_token(self, requester: Requester, label: str) -> tuple[str, ApiToken]:
        """Make a personal API token acting as `requester`; return it (shown once) and its row."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        at = self.clock()
        who = json.dumps(requester.to_dict(), sort_keys=True)
        self.store.insert_token(token_id, _token_hash(token), requester.key, who, label, at)
        return token, ApiToken(token_id, requester.key, who, label, at, None, None)

    def token_requester(self, token: str) -> Requester | None:
        """Return who a live personal token acts as, or None (unknown or revoked)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        found = self.store.token_by_hash(_token_hash(token), self.clock())
        if found is None:
            return None
        return Requester.from_dict(json.loads(found.requester))

    def tokens_of(self, user_key: str) -> list[ApiToken]:
        """Return one person's tokens, newest first."""
        return self.store.tokens_of(user_key)

    def revoke_token(self, token_id: str, user_key: str) -> bool:
        """Revoke one of this person's tokens at once; False when there is no such live token."""
        return self.store.revoke_token(token_id, user_key, self.clock())

    def create_board(self, owner_key: str, name: str, is_public: bool) -> Board:
        """Make an empty board owned by `owner_key`."""
        board = Board(secrets.token_hex(8), owner_key, name, is_public, self.clock())
        self.store.insert_board(board)
        return board

    def board(self, board_id: str) -> Board | None:
        """Return a board, or None."""
        return self.store.board(board_id)

    def boards_of(self, owner_key: str) -> list[Board]:
        """Return one person's boards, newest first."""
        return self.store.boards_of(owner_key)

    def update_board(
        self, board_id: str, owner_key: str, name: str | None = None, is_public: bool | None = None
    ) -> bool:
        """Rename a board or make it public/private; False unless the owner asks."""
        return self.store.update_board(board_id, owner_key, name, is_public)

    def delete_board(self, board_id: str, owner_key: str) -> bool:
        """Delete a board (never its images); False unless the owner asks."""
        return self.store.delete_board(board_id, owner_key)

    def set_on_board(
        self, board_id: str, owner_key: str, image_ids: list[str], is_on: bool
    ) -> bool:
        """Add or remove images on a board; False unless the owner asks."""
        return self.store.set_on_board(board_id, owner_key, image_ids, is_on, self.clock())

    def board_images(self, board_id: str, limit: int) -> list[ImageRecord]:
        """Return a board's images, last added first."""
        found = (self.store.image(i) for i in self.store.board_image_ids(board_id, limit))
        return [image for image in found if image is not None]

    def count(self) -> int:
        """Return how many images the gallery holds."""
        return self.store.count_images()

    def stored_job(self, job_id: str) -> JobView | None:
        """Return a job as the store has it (with its image ids once done), or None."""
        record = self.store.job(job_id)
        if record is None:
            return None
        images = self.store.images_of_job(job_id) if record.state == JobState.DONE else []
        return JobView.of_record(record, tuple(image.id for image in images))

    def audit(self, limit: int = 20, action: str | None = None) -> list[AuditEntry]:
        """Return the newest audit entries."""
        return self.store.audit(limit, action)

    def set_message_url(self, job_id: str, url: str) -> None:
        """Link a job's images to the Discord message that shows them."""
        self.store.set_message_url(job_id, url)

    def health(self) -> StoreHealth:
        """Return the database's quick check verdict and the free disk space."""
        try:
            state = self.store.quick_check()
        except sqlite3.Error as error:
            state = f"error: {error}"
        try:
            free = shutil.disk_usage(self.store.data_dir).free
        except OSError:
            free = 0
        return StoreHealth(state, free)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
