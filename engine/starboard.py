"""The starboard: result messages that collect stars, their favourites, and their one repost.

A frontend says which message got a star from whom; the engine finds the job and images that
message shows, keeps each star as a favourite (`discord:<id>`, so the gallery's counts follow
the stars), and hands out the right to repost a message once.

Once, also across restarts and races: the claim in `count` wins for one caller only (one
transaction). The winner posts and calls `posted`, or `release` when the post failed. A winner
that crashed between claim and post leaves the claim behind; after `claim_stale_s` the next
star claims it again, so the repost is late, not lost. (A crash after Discord stored the post
but before `posted` could repost it; the frontend's nonce lets Discord drop that second copy
when it comes within Discord's few minutes of nonce memory.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.offload import Offload
from engine.store import ImageRecord, Store

# A claim older than this belongs to a post that died with its process.
CLAIM_STALE_S = 120.0


@dataclass(frozen=True)
class StarredMessage:
    """A result message that got a star: where it is, its images, whether it was reposted."""

    message_id: str
    channel_id: str
    images: tuple[ImageRecord, ...]
    is_posted: bool

    @property
    def author_id(self) -> str:
        """Return the id (in its source) of whoever asked for the images."""
        return self.images[0].author_id


class Starboard:
    """Find starred result messages, keep stars as favourites, and claim each repost once."""

    def __init__(
        self,
        store: Store,
        offload: Offload,
        clock: Callable[[], float],
        claim_stale_s: float = CLAIM_STALE_S,
    ) -> None:
        self.store = store
        self.offload = offload
        self.clock = clock
        self.claim_stale_s = claim_stale_s

    async def find(self, message_id: str, channel_id: str) -> StarredMessage | None:
        """Return the result message with this id (remembered from now on), or None."""
        return await self.offload.run(self._find, message_id, channel_id, True)

    async def known(self, message_id: str) -> StarredMessage | None:
        """Return a result message that got a star before (cheap: no search), or None."""
        return await self.offload.run(self._find, message_id, "", False)

    def _find(self, message_id: str, channel_id: str, may_search: bool) -> StarredMessage | None:
        entry = self.store.starboard_entry(message_id)
        if entry is not None:
            channel_id = entry.channel_id
            image = self.store.image(entry.image_id, include_deleted=True)
            job_id = image.job_id if image else None
        elif may_search:
            job_id = self.store.job_of_message(message_id)
        else:
            return None
        images = tuple(self.store.images_of_job(job_id)) if job_id else ()
        if not images:
            return None
        if entry is None:
            self.store.add_starboard_entry(message_id, images[0].id, channel_id)
        is_posted = entry is not None and entry.is_posted
        return StarredMessage(message_id, channel_id, images, is_posted)

    async def star(self, message: StarredMessage, user_key: str, is_on: bool) -> int:
        """Add (or take back) one person's star: a favourite of each image the message shows.

        Returns the first image's favourite count.
        """

        def change() -> int:
            at = self.clock()
            counts = [
                self.store.set_favourite(image.id, user_key, is_on, at) for image in message.images
            ]
            return counts[0]

        return await self.offload.run(change)

    async def count(self, message_id: str, stars: int, threshold: int) -> bool:
        """Record the stars that count; claim the repost once they reach `threshold`.

        Returns True for the one caller that now has to post it (see the module docstring).
        """

        def count() -> bool:
            now = self.clock()
            self.store.set_stars(message_id, stars)
            if stars < threshold:
                return False
            return self.store.claim_starboard_post(message_id, now, now - self.claim_stale_s)

        return await self.offload.run(count)

    async def posted(self, message_id: str, posted_message_id: str) -> None:
        """Record the repost: this message is on the starboard for good."""
        await self.offload.run(
            self.store.finish_starboard_post, message_id, posted_message_id, self.clock()
        )

    async def release(self, message_id: str) -> None:
        """Give back a claim whose post failed; the next star tries again."""
        await self.offload.run(self.store.release_starboard_post, message_id)
