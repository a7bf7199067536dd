"""The starboard: ⭐ on result messages become favourites, and enough repost the result once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.bot.conftest import GALLERY, Harness, wait_for
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeMember, FakeMessage, FakeUser

pytestmark = pytest.mark.timeout(120)

BOARD_ID = 400_000_000_000_000_009
# Long enough for a reaction event to be handled when nothing shows that it was.
SETTLE_S = 0.5


@pytest.fixture
def fake_world(fake: FakeDiscord) -> FakeDiscord:
    """Add a #starboard channel, two more members and another bot (before the bot starts)."""
    fake.guild.channels.append(FakeChannel(BOARD_ID, "starboard", position=3))
    for user in (
        FakeUser(100_000_000_000_000_011, "carol"),
        FakeUser(100_000_000_000_000_012, "dave"),
        FakeUser(100_000_000_000_000_013, "otherbot", bot=True),
    ):
        fake.world.users[user.name] = user
        fake.guild.members.append(FakeMember(user))
    return fake


async def start(harness: Harness, **bot: Any) -> None:
    """Start the bot with the starboard on #starboard (threshold 3) unless told otherwise."""
    await harness.start(bot={"starboard_channel": str(BOARD_ID), "starboard_threshold": 3, **bot})


async def result(harness: Harness, prompt: str = "a red fox") -> tuple[FakeMessage, str]:
    """Run /imagine as alice; return the result message and the job id."""
    job_id = await harness.job_id(await harness.imagine(prompt))
    return await harness.delivered(job_id), job_id


def board(fake: FakeDiscord) -> list[FakeMessage]:
    return fake.messages(BOARD_ID)


def favourites(harness: Harness, job_id: str) -> int:
    assert harness.engine is not None
    image = harness.engine.store.image(f"{job_id}-0")
    assert image is not None
    return image.favourites


async def star(harness: Harness, message: FakeMessage, job_id: str, *names: str) -> None:
    """Give ⭐ from each named member in turn, waiting until each became a favourite."""
    for name in names:
        wanted = favourites(harness, job_id) + 1
        assert await harness.fake.react(message, harness.fake.user(name))
        await wait_for(lambda wanted=wanted: favourites(harness, job_id) == wanted, 10)


async def test_three_stars_repost_the_result_once_with_image_prompt_author_and_links(
    fake_world: FakeDiscord, harness: Harness
) -> None:
    fake = fake_world
    await start(harness)
    message, job_id = await result(harness, "a **bold** fox")

    await star(harness, message, job_id, "bob", "carol", "mod")
    [post] = await wait_for(lambda: board(fake), 10)

    [embed] = post.embeds
    guild, channel = fake.guild.id, fake.text_channel.id
    assert "a \\*\\*bold\\*\\* fox" in embed["description"]
    assert f"<@{fake.user('alice').id}>" in embed["description"]
    assert f"https://discord.com/channels/{guild}/{channel}/{message.id}" in embed["description"]
    assert f"{GALLERY}/images/{job_id}-0" in embed["description"]
    assert embed["title"] == "⭐ 3"
    assert embed["image"]["url"] == f"attachment://{job_id}-0.png"
    [attachment] = post.attachments
    assert harness.engine is not None
    stored = harness.engine.store.image(f"{job_id}-0")
    assert stored is not None
    assert attachment.data == harness.engine.library.read(stored)
    assert post.allowed_mentions is not None and post.allowed_mentions["parse"] == []


async def test_the_authors_and_bots_stars_do_not_count(
    fake_world: FakeDiscord, harness: Harness
) -> None:
    fake = fake_world
    await start(harness)
    message, job_id = await result(harness)

    await fake.react(message, fake.user("alice"))
    await fake.react(message, fake.user("otherbot"))
    await star(harness, message, job_id, "bob", "carol")
    entry = harness.engine.store.starboard_entry
    await wait_for(lambda: (row := entry(str(message.id))) is not None and row.stars == 2, 10)
    await asyncio.sleep(SETTLE_S)
    assert board(fake) == []
    assert favourites(harness, job_id) == 2

    await star(harness, message, job_id, "mod")
    [post] = await wait_for(lambda: board(fake), 10)
    assert post.embeds[0]["title"] == "⭐ 3"


async def test_more_stars_removed_stars_and_a_restart_still_post_once(
    fake_world: FakeDiscord, harness: Harness
) -> None:
    fake = fake_world
    await start(harness)
    message, job_id = await result(harness)
    await star(harness, message, job_id, "bob", "carol", "mod")
    await wait_for(lambda: board(fake), 10)

    await star(harness, message, job_id, "dave")
    assert await fake.unreact(message, fake.user("bob"))
    await wait_for(lambda: favourites(harness, job_id) == 3, 10)
    await star(harness, message, job_id, "bob")
    await harness.stop()
    await harness.start()
    assert await fake.unreact(message, fake.user("carol"))
    await wait_for(lambda: favourites(harness, job_id) == 3, 10)
    await star(harness, message, job_id, "carol", "owner")
    await asyncio.sleep(SETTLE_S)

    assert len(board(fake)) == 1
    entry = harness.engine.store.starboard_entry(str(message.id))
    assert entry is not None and entry.posted_message_id == str(board(fake)[0].id)


async def test_the_images_favourites_follow_the_stars(
    fake_world: FakeDiscord, harness: Harness
) -> None:
    fake = fake_world
    await start(harness)
    message, job_id = await result(harness)

    await star(harness, message, job_id, "bob", "carol")
    assert favourites(harness, job_id) == 2
    assert harness.engine.store.is_favourite(f"{job_id}-0", f"discord:{fake.user('bob').id}")

    assert await fake.unreact(message, fake.user("bob"))
    await wait_for(lambda: favourites(harness, job_id) == 1, 10)
    assert not harness.engine.store.is_favourite(f"{job_id}-0", f"discord:{fake.user('bob').id}")


async def test_the_starboard_is_off_by_default(fake_world: FakeDiscord, harness: Harness) -> None:
    fake = fake_world
    await harness.start()
    message, job_id = await result(harness)

    await star(harness, message, job_id, "bob", "carol", "mod")
    await asyncio.sleep(SETTLE_S)

    assert board(fake) == []
    assert fake.calls_to("GET", r"/reactions/") == []
    assert favourites(harness, job_id) == 3


@pytest.mark.parametrize("author", ["imagine", "alice"])
async def test_stars_on_a_message_that_is_not_a_result_do_nothing(
    fake_world: FakeDiscord, harness: Harness, author: str
) -> None:
    fake = fake_world
    await start(harness, starboard_threshold=1)
    other = fake.post_user_message(fake.text_channel.id, fake.user(author), "hello")

    for name in ("bob", "carol", "mod"):
        await fake.react(other, fake.user(name))
    await asyncio.sleep(SETTLE_S)

    assert board(fake) == []
    assert harness.engine.store.starboard_entry(str(other.id)) is None


async def test_a_failed_post_is_tried_again_on_the_next_star(
    fake_world: FakeDiscord, harness: Harness
) -> None:
    fake = fake_world
    await start(harness, delivery_attempts=1)
    message, job_id = await result(harness)
    # 503: discord.py does not retry it itself, and one delivery attempt gives up at once.
    fake.fail_next("POST", rf"/channels/{BOARD_ID}/messages$", 503)

    await star(harness, message, job_id, "bob", "carol", "mod")
    await wait_for(lambda: fake.calls_to("POST", rf"/channels/{BOARD_ID}/messages$"), 10)
    await asyncio.sleep(SETTLE_S)
    assert board(fake) == []

    await star(harness, message, job_id, "dave")
    [post] = await wait_for(lambda: board(fake), 10)
    assert post.embeds[0]["title"] == "⭐ 4"
