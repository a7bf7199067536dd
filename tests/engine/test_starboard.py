"""The starboard in the engine: finding result messages, stars as favourites, one repost."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine import ConfigError, JobState, Starboard, Store
from engine.config import from_mapping
from engine.offload import Offload
from tests.engine.test_store import image

MESSAGE = "900000000000000001"
CHANNEL = "400000000000000001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store with job1 done (two images) and delivered in MESSAGE, and job2 failed."""
    store = Store(tmp_path / "data")
    store.open()
    for job_id in ("job1", "job2"):
        store.insert_job(job_id, "discord:1", {}, {}, {}, None, 1000.0)
    store.finish_job("job1", JobState.DONE, 1001.0, images=[image(1), image(1, id="job1-1", idx=1)])
    store.mark_delivered("job1", {"mode": "interaction", "message_id": MESSAGE}, 1002.0)
    store.finish_job("job2", JobState.FAILED, 1001.0, error="boom")
    store.mark_delivered("job2", {"mode": "interaction", "message_id": "900000000000000002"}, 1)
    yield store
    store.close()


@pytest.fixture
async def starboard(store: Store) -> AsyncIterator[Starboard]:
    offload = Offload()
    yield Starboard(store, offload, lambda: 5000.0, claim_stale_s=60)
    await offload.close()


def test_a_message_is_found_by_the_delivery_that_posted_it(store: Store) -> None:
    assert store.job_of_message(MESSAGE) == "job1"
    assert store.job_of_message("900000000000000002") is None  # failed: no images
    assert store.job_of_message("123") is None


async def test_find_returns_the_messages_images_and_remembers_it(
    starboard: Starboard, store: Store
) -> None:
    assert await starboard.known(MESSAGE) is None

    found = await starboard.find(MESSAGE, CHANNEL)

    assert found is not None
    assert [i.id for i in found.images] == ["job1-0", "job1-1"]
    assert found.author_id == "user1" and not found.is_posted
    assert await starboard.known(MESSAGE) == found
    entry = store.starboard_entry(MESSAGE)
    assert entry is not None and (entry.image_id, entry.channel_id) == ("job1-0", CHANNEL)


async def test_a_star_is_a_favourite_of_every_image_of_the_message(
    starboard: Starboard, store: Store
) -> None:
    found = await starboard.find(MESSAGE, CHANNEL)
    assert found is not None

    assert await starboard.star(found, "discord:7", True) == 1
    assert await starboard.star(found, "discord:7", True) == 1  # the same star again
    assert [store.is_favourite(i, "discord:7") for i in ("job1-0", "job1-1")] == [True, True]
    assert await starboard.star(found, "discord:7", False) == 0


async def test_the_repost_is_claimed_only_at_the_threshold_and_only_once(
    starboard: Starboard, store: Store
) -> None:
    await starboard.find(MESSAGE, CHANNEL)

    assert not await starboard.count(MESSAGE, 2, threshold=3)
    assert await starboard.count(MESSAGE, 3, threshold=3)
    assert not await starboard.count(MESSAGE, 4, threshold=3)
    await starboard.posted(MESSAGE, "900000000000000009")

    found = await starboard.find(MESSAGE, CHANNEL)
    assert found is not None and found.is_posted
    entry = store.starboard_entry(MESSAGE)
    assert entry is not None and (entry.stars, entry.posted_message_id) == (4, "900000000000000009")


def test_of_many_racing_claims_one_wins(store: Store) -> None:
    store.add_starboard_entry(MESSAGE, "job1-0", CHANNEL)
    wins: list[bool] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        wins.append(store.claim_starboard_post(MESSAGE, 100.0, stale_before=0.0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(wins) == [False] * 7 + [True]


def test_a_claim_left_by_a_crash_is_taken_again_once_stale(store: Store) -> None:
    store.add_starboard_entry(MESSAGE, "job1-0", CHANNEL)
    assert store.claim_starboard_post(MESSAGE, at=100.0, stale_before=0.0)

    assert not store.claim_starboard_post(MESSAGE, at=130.0, stale_before=70.0)
    assert store.claim_starboard_post(MESSAGE, at=200.0, stale_before=140.0)


def test_a_released_claim_can_be_claimed_again_but_a_posted_one_never(store: Store) -> None:
    store.add_starboard_entry(MESSAGE, "job1-0", CHANNEL)
    assert store.claim_starboard_post(MESSAGE, at=100.0, stale_before=0.0)
    store.release_starboard_post(MESSAGE)
    assert store.claim_starboard_post(MESSAGE, at=101.0, stale_before=0.0)

    store.finish_starboard_post(MESSAGE, "900000000000000009", at=102.0)
    store.release_starboard_post(MESSAGE)

    assert not store.claim_starboard_post(MESSAGE, at=10_000.0, stale_before=9_999.0)
    entry = store.starboard_entry(MESSAGE)
    assert entry is not None and entry.is_posted


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"starboard_channel": "#stars"}, "bot.starboard_channel: expected an id"),
        ({"starboard_threshold": 0}, "bot.starboard_threshold: expected an integer 1–1000"),
    ],
)
def test_bad_starboard_settings_are_refused_with_the_key(values: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"bot": values}, {})
    assert str(caught.value).startswith(problem)
