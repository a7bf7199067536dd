"""Store: gallery queries (FTS search, keyset pages, filters), favourites, audit, bans, files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import ImageQuery, ImageRecord, Store, StoreError
from engine.store import SCHEMA_VERSION

V0_DATABASE = Path(__file__).parent / "data" / "v0.sqlite3"


def image(n: int, **overrides: object) -> ImageRecord:
    values: dict[str, object] = {
        "id": f"job{n}-0",
        "job_id": f"job{n}",
        "idx": 0,
        "seed": n,
        "width": 32,
        "height": 32,
        "prompt": f"a red fox number {n}" if n % 2 else f"a blue whale number {n}",
        "negative_prompt": "",
        "steps": 4,
        "guidance": 7.0,
        "scheduler": "Euler",
        "model": "tiny",
        "kind": "txt2img",
        "source": "discord" if n % 3 == 0 else "web",
        "author_id": f"user{n % 4}",
        "author_name": f"user{n % 4}",
        "seconds": 0.1,
        "created_at": 1000.0 + n,
        "file_name": f"job{n}-0.png",
    }
    values.update(overrides)
    return ImageRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data")
    store.open()
    store.insert_images([image(n) for n in range(1, 31)])
    yield store
    store.close()


def test_pages_are_newest_first_and_follow_the_cursor(store: Store) -> None:
    first = store.list_images(ImageQuery(limit=10))
    assert [i.seed for i in first] == list(range(30, 20, -1))
    second = store.list_images(ImageQuery(limit=10, before=first[-1].n))
    assert [i.seed for i in second] == list(range(20, 10, -1))


def test_search_matches_prompt_words_and_prefixes(store: Store) -> None:
    foxes = store.list_images(ImageQuery(text="red fox", limit=100))
    assert len(foxes) == 15 and all("fox" in i.prompt for i in foxes)
    assert len(store.list_images(ImageQuery(text="wha", limit=100))) == 15


@pytest.mark.parametrize("text", ['"', "fox OR", "NEAR(", "*", "a AND (", "-fox", "'; DROP"])
def test_search_text_is_never_fts_syntax(store: Store, text: str) -> None:
    store.list_images(ImageQuery(text=text))


def test_filters_by_source_author_and_date(store: Store) -> None:
    assert all(i.source == "discord" for i in store.list_images(ImageQuery(source="discord")))
    assert all(i.author_id == "user1" for i in store.list_images(ImageQuery(author_id="user1")))
    window = store.list_images(ImageQuery(since=1010, until=1015, limit=100))
    assert sorted(i.seed for i in window) == [10, 11, 12, 13, 14]


def test_favourites_count_and_filter(store: Store) -> None:
    assert store.set_favourite("job3-0", "web:a", True, 1.0) == 1
    assert store.set_favourite("job3-0", "web:a", True, 1.0) == 1
    assert store.set_favourite("job3-0", "web:b", True, 1.0) == 2
    assert [i.id for i in store.list_images(ImageQuery(favourites_of="web:a"))] == ["job3-0"]
    assert store.set_favourite("job3-0", "web:a", False, 1.0) == 1
    assert not store.is_favourite("job3-0", "web:a")


def test_deleted_images_leave_search_and_pages(store: Store) -> None:
    assert store.delete_image("job1-0")
    assert store.image("job1-0") is None
    assert "job1-0" not in {i.id for i in store.list_images(ImageQuery(text="fox", limit=100))}
    assert not store.delete_image("job1-0")


def test_nsfw_images_can_be_left_out(store: Store) -> None:
    store.insert_images([image(99, is_nsfw_channel=True)])
    assert "job99-0" not in {i.id for i in store.list_images(ImageQuery(include_nsfw=False))}


def test_a_rerun_never_duplicates_an_image_row(store: Store) -> None:
    store.insert_images([image(1)])
    assert store.count_images() == 30


def test_temp_files_from_a_crash_are_removed_on_open(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    (store.images_dir / ".abc-0.png.tmp").write_bytes(b"half a png")
    store.close()
    store.open()
    assert list(store.images_dir.iterdir()) == []


def test_audit_and_bans_round_trip(store: Store) -> None:
    store.add_audit("rejected", "discord:1", 5.0, rule="blocklist", prompt="gore")
    assert store.audit()[0].rule == "blocklist"
    store.set_ban("discord:1", None, "spam", "discord:9", 6.0)
    assert store.bans()[0].reason == "spam"
    assert store.remove_ban("discord:1") and not store.remove_ban("discord:1")


def test_a_database_written_by_the_first_release_opens_and_migrates(tmp_path: Path) -> None:
    """tests/engine/data/v0.sqlite3 was written by the first release's store (user_version 0)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(V0_DATABASE, data / "imagine.sqlite3")
    store = Store(data)
    store.open()
    assert store.schema_version == SCHEMA_VERSION > 1
    states = {job.id: job.state for job in store.recent_jobs(limit=10)}
    assert states == {
        "aaaaaaaaaaaa": "done",
        "bbbbbbbbbbbb": "queued",
        "cccccccccccc": "running",
        "dddddddddddd": "failed",
    }
    image = store.image("aaaaaaaaaaaa-0")
    assert image is not None and image.model_hash == "" and image.favourites == 1
    assert store.job("aaaaaaaaaaaa").delivered_at is not None  # type: ignore[union-attr]
    assert [ban.user_key for ban in store.bans()] == ["discord:44"]
    assert store.audit(action="rejected")[0].prompt == "g o r e"
    store.mark_started(["bbbbbbbbbbbb"], 1.0, worker="local-0")  # new columns take writes
    assert store.job("bbbbbbbbbbbb").worker == "local-0"  # type: ignore[union-attr]
    assert [i.id for i in store.list_images(ImageQuery(text="fox"))] == [
        "aaaaaaaaaaaa-1",
        "aaaaaaaaaaaa-0",
    ]
    store.close()
    again = Store(data)
    again.open()  # a second open migrates nothing more
    assert again.schema_version == SCHEMA_VERSION and again.integrity_check() == "ok"
    again.close()


def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    store.db.connection().execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(StoreError, match="newer than this program"):
        Store(tmp_path).open()


def test_search_pages_through_filtered_matches_once_each(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.open()
    rows = [
        image(n, prompt=("a red fox" if n % 3 == 0 else "a lighthouse"), is_nsfw_channel=n % 2 == 0)
        for n in range(600)
    ]
    store.insert_images(rows)
    expected = [row.id for row in reversed(rows) if "fox" in row.prompt and not row.is_nsfw_channel]
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = store.page_images(ImageQuery(text="fox", include_nsfw=False, before=cursor, limit=7))
        seen += [image.id for image in page.images]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected and len(expected) == 100
    store.close()
