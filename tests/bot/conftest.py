"""Fixtures for the bot: the fake Discord, settings pointing at it, a harness that runs the bot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot import ImagineBot
from engine import ConfigError, Engine, Settings, Store, reload_settings
from tests.conftest import gated_workers, wait_until
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage, FakeUser

GALLERY = "http://gallery.test"


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Keyword arguments for FakeDiscord; override with @pytest.mark.parametrize."""
    return {}


@pytest.fixture
async def fake(fake_options: dict[str, Any]) -> AsyncIterator[FakeDiscord]:
    """A fake Discord; the bot reaches it through `[bot] api_base`, not the fake's own patch."""
    options = {"heartbeat_interval_s": 0.5, **fake_options}
    async with FakeDiscord(point_discord_py=False, **options) as server:
        yield server


@pytest.fixture
def bot_settings(
    make_settings: Callable[..., Settings], fake: FakeDiscord
) -> Callable[..., Settings]:
    """Return a factory of settings for a bot talking to the fake, with fast small jobs."""

    def make(**sections: dict[str, Any]) -> Settings:
        merged: dict[str, dict[str, Any]] = {
            "bot": {
                "api_base": fake.api_base,
                "gateway_url": fake.gateway_url,
                "progress_interval_s": 0.2,
                "gallery_url": GALLERY,
            },
            "limits": {"default_steps": 2, "max_per_user": 50},
            "web": {"enabled": False},
        }
        for name, values in sections.items():
            merged.setdefault(name, {}).update(values)
        return make_settings(**merged)

    return make


class Harness:
    """Run the real ImagineBot and a real engine against the fake Discord."""

    def __init__(self, fake: FakeDiscord, make: Callable[..., Settings]) -> None:
        self.fake = fake
        self.make = make
        self.settings: Settings | None = None
        self.engine: Engine | None = None
        self.bot: ImagineBot | None = None
        self.errors: list[BaseException] = []
        self._task: asyncio.Task[None] | None = None
        self.config_path: str | None = None
        self.sent_at: dict[int, float] = {}

    async def start(
        self,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.time,
        worker_wrapper: Callable[[Any], Any] | None = None,
        **sections: Any,
    ) -> ImagineBot:
        """Start an engine and a bot (after `stop`, on the same data folder = a restart).

        `worker_wrapper` wraps each of the engine's workers (a fake from tests/fakes/worker.py).
        """
        self.settings = settings or self.settings or self.make(**sections)
        workers = None
        if worker_wrapper is not None:
            workers = gated_workers(self.settings, worker_wrapper)
        self.engine = Engine(self.settings, Store(self.settings.engine.data_dir), workers=workers)
        await self.engine.start()
        self.bot = ImagineBot(
            self.settings, self.engine, self._reload, clock=clock, guild_ready_timeout=0.05
        )
        self._task = asyncio.create_task(self.bot.start(self.fake.token))
        await asyncio.wait_for(self.bot.wait_until_ready(), 10)
        return self.bot

    async def restart_bot(self, before_start: Callable[[], Any] | None = None) -> ImagineBot:
        """Close the Discord client only, then start a new one on the same running engine."""
        assert self.bot is not None and self.engine is not None and self.settings is not None
        await self.bot.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)
        if before_start is not None:
            await before_start()
        self.bot = ImagineBot(self.settings, self.engine, self._reload, guild_ready_timeout=0.05)
        self._task = asyncio.create_task(self.bot.start(self.fake.token))
        await asyncio.wait_for(self.bot.wait_until_ready(), 10)
        return self.bot

    def _reload(self) -> Settings | ConfigError:
        result = reload_settings(self.config_path)
        if isinstance(result, Settings) and self.engine is not None:
            self.engine.reload(result)
        return result

    async def stop(self) -> None:
        """Close the bot, then the engine (a running job is re-queued)."""
        if self.bot is not None:
            await self.bot.close()
            if self._task is not None:
                await asyncio.wait([self._task], timeout=5)
            self.bot = None
        if self.engine is not None:
            await asyncio.wait_for(self.engine.close(grace_s=5), 60)
            self.engine = None

    async def imagine(
        self,
        prompt: str = "a red fox",
        user: str | FakeUser = "alice",
        channel_id: int | None = None,
        **options: Any,
    ) -> FakeInteraction:
        """Send /imagine with fast defaults (2 steps, seed 7)."""
        who = self.fake.user(user) if isinstance(user, str) else user
        values: dict[str, Any] = {"prompt": prompt, "steps": 2, "seed": 7, **options}
        values = {k: v for k, v in values.items() if v is not None}
        extra = {
            k: values.pop(k)
            for k in ("app_permissions", "member_permissions", "roles")
            if k in values
        }
        sent_at = time.time()
        handle = await self.fake.send_slash_command(
            self.fake.guild.id,
            channel_id or self.fake.text_channel.id,
            who,
            "imagine",
            values,
            **extra,
        )
        self.sent_at[handle.id] = sent_at
        return handle

    async def ack_latency_s(self, handle: FakeInteraction, timeout_s: float = 5) -> float:
        """Wait for an interaction's callback; return seconds from dispatch to acknowledgement."""
        call = await self.fake.wait_for_call(
            lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"), timeout_s
        )
        return call.timestamp - self.sent_at[handle.id]

    async def job_id(self, handle: FakeInteraction, timeout_s: float = 5) -> str:
        """Return the job an interaction created (its id is the idempotency key)."""
        assert self.engine is not None
        engine = self.engine

        def found() -> str | None:
            record = engine.store.job_by_key(str(handle.id))
            return record.id if record else None

        return await wait_for(found, timeout_s)

    async def delivered(self, job_id: str, timeout_s: float = 60) -> FakeMessage:
        """Wait until a job is delivered; return the message it was delivered in."""
        assert self.engine is not None
        engine = self.engine

        def done() -> dict[str, Any] | None:
            view = engine.job(job_id)
            return view.delivery if view.delivered_at is not None else None

        note = await wait_for(done, timeout_s)
        return self.fake.message(int(note["message_id"]))

    async def answer(self, handle: FakeInteraction, timeout_s: float = 5) -> FakeMessage:
        """Wait for the message an interaction's own response created (a reply, usually)."""

        def made() -> FakeMessage | None:
            mine = [
                m
                for m in self.fake.rest.messages.values()
                if m.interaction_id == handle.id and not m.is_loading
            ]
            return mine[0] if mine else None

        return await wait_for(made, timeout_s)


wait_for = wait_until  # the bot tests' name for the shared poller


@pytest.fixture
async def harness(
    fake: FakeDiscord, bot_settings: Callable[..., Settings]
) -> AsyncIterator[Harness]:
    """Return a harness; whatever it started is stopped after the test."""
    running = Harness(fake, bot_settings)
    yield running
    await running.stop()
    assert fake.unknown_calls == [], "the bot called routes the fake does not know"
