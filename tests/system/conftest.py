"""System fixtures: the fake Discord on the test's loop, programs on temporary data folders.

Long variants are marked `slow`; they are skipped unless `-m` names `slow` (`make soak`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.discord import FakeDiscord, FakeMember, FakeUser
from tests.system.harness import Program

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's `slow` tests unless the marker expression asks for them."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="long variant: run with `make soak` (-m slow)")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A fake Discord on 127.0.0.1; the child process reaches it through `[bot] api_base`."""
    async with FakeDiscord(heartbeat_interval_s=1.0, point_discord_py=False) as server:
        yield server


@pytest.fixture
def make_program(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Program]]:
    """Return a factory of programs (not started); each is killed after the test if still up."""
    made: list[Program] = []

    def make(fake: FakeDiscord | None = None, **options: Any) -> Program:
        program = Program(tmp_path / f"program{len(made)}", tiny_model_dir, fake, **options)
        made.append(program)
        return program

    yield make
    for program in made:
        program.ensure_stopped()


def add_users(
    fake: FakeDiscord, count: int, first_id: int = 600_000_000_000_000_000
) -> list[FakeUser]:
    """Add `count` members to the fake's guild; return them."""
    users = [FakeUser(first_id + n, f"member{n}") for n in range(count)]
    fake.guild.members.extend(FakeMember(user) for user in users)
    return users
