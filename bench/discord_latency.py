"""4. discord-latency — with a job running, 200 `/imagine` through the test fake Discord.

The real ImagineBot and a real engine (tiny model) talk to the in-process fake Discord
(tests/fakes/discord.py). A long job keeps the worker busy throughout. Defer latency is the time
from the fake dispatching INTERACTION_CREATE to the bot's first interaction callback reaching
it. Two arrival patterns: spaced (20 per second) and a burst (all 200 at once).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report

COMMANDS = 200
SPACING_S = 0.05
GOAL_P99_S = 0.5
BLOCKER_STEPS = 500


class Session:
    """The fake Discord, an engine and the bot, all on this loop."""

    def __init__(self, fake: Any, folder: Path) -> None:
        from engine.config import from_mapping

        data_dir = tempfile.mkdtemp(prefix="bench-discord-")
        raw = {
            "engine": {"model": str(folder), "data_dir": data_dir, "threads": 1},
            "limits": {"max_per_user": 5, "max_queue": 1000, "max_steps": BLOCKER_STEPS},
            "bot": {"api_base": fake.api_base, "gateway_url": fake.gateway_url},
            "web": {"enabled": False},
        }
        self.settings = from_mapping(raw, {})
        self.fake = fake
        self.engine: Any = None
        self.bot: Any = None
        self._task: asyncio.Task[None] | None = None
        self.sent_at: dict[int, float] = {}

    async def start(self) -> None:
        """Start the engine and the bot; wait until the bot is ready."""
        from bot import ImagineBot
        from engine import Engine, Store

        self.engine = Engine(self.settings, Store(self.settings.engine.data_dir))
        await self.engine.start()
        self.bot = ImagineBot(
            self.settings, self.engine, lambda: self.settings, guild_ready_timeout=0.05
        )
        self._task = asyncio.create_task(self.bot.start(self.fake.token))
        await asyncio.wait_for(self.bot.wait_until_ready(), 30)

    async def close(self) -> None:
        """Close the bot, then the engine."""
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)
        if self.engine is not None:
            await asyncio.wait_for(self.engine.close(grace_s=1), 60)

    async def start_blocker(self) -> str:
        """Submit a long job straight to the engine; return its id once it runs."""
        from engine import GenerationRequest, Requester

        request = GenerationRequest("a long job", steps=BLOCKER_STEPS, seed=1, width=64, height=64)
        view = await self.engine.submit(request, Requester("web", "blocker"))
        while view.id not in self.engine.status().running_job_ids:
            await asyncio.sleep(0.01)
        return str(view.id)

    async def imagine(self, user: Any, n: int) -> Any:
        """Dispatch one /imagine; remember when."""
        sent_at = time.time()
        handle = await self.fake.send_slash_command(
            self.fake.guild.id,
            self.fake.text_channel.id,
            user,
            "imagine",
            {"prompt": f"a red fox, study {n}", "steps": 2, "seed": n},
        )
        self.sent_at[handle.id] = sent_at
        return handle

    async def ack_s(self, handle: Any) -> float:
        """Return seconds from dispatch to the bot's first callback for this interaction."""
        call = await self.fake.wait_for_call(
            lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"), 30
        )
        return float(call.timestamp - self.sent_at[handle.id])


async def measure(folder: Path) -> dict[str, Any]:
    """Run both arrival patterns with a job running; return latencies."""
    from tests.fakes.discord import FakeDiscord, FakeMember, FakeUser

    async with FakeDiscord(point_discord_py=False, heartbeat_interval_s=0.5) as fake:
        users = [FakeUser(600_000_000_000_000_000 + n, f"bench{n}") for n in range(COMMANDS)]
        fake.guild.members.extend(FakeMember(user) for user in users)
        session = Session(fake, folder)
        await session.start()
        try:
            blocker = await session.start_blocker()
            spaced = []
            for n, user in enumerate(users):
                spaced.append(await session.imagine(user, n))
                await asyncio.sleep(SPACING_S)
            spaced_s = await asyncio.gather(*(session.ack_s(h) for h in spaced))
            burst = await asyncio.gather(
                *(session.imagine(user, COMMANDS + n) for n, user in enumerate(users))
            )
            burst_s = await asyncio.gather(*(session.ack_s(h) for h in burst))
            was_running = blocker in session.engine.status().running_job_ids
        finally:
            await session.close()
    return {
        "spaced": percentiles(spaced_s),
        "burst": percentiles(burst_s),
        "job_running_throughout": was_running,
    }


def percentiles(values: list[float]) -> dict[str, Any]:
    """Return p50, p99 and max in seconds."""
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 4),
        "p99_s": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 4),
        "max_s": round(ordered[-1], 4),
    }


def run() -> dict[str, Any]:
    """Measure, write results/discord_latency.json and a RESULTS.md section."""
    from bench.overhead import tiny_model

    facts = report.machine()
    data: dict[str, Any] = {"name": "discord_latency", "machine": facts}
    data.update(asyncio.run(measure(tiny_model())))
    data["goal"] = f"p99 < {GOAL_P99_S} s (spaced arrivals)"
    data["meets_goal"] = data["spaced"]["p99_s"] < GOAL_P99_S
    report.write("discord_latency", data)
    report.append("discord-latency (fake Discord, tiny model)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    out = [
        f"{COMMANDS} `/imagine` spaced {SPACING_S * 1000:.0f} ms apart, then {COMMANDS} at once, "
        f"while a {BLOCKER_STEPS}-step job ran (running throughout: "
        f"{data['job_running_throughout']}). Defer = dispatch → first interaction callback.",
        "",
        "| arrivals | n | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for name in ("spaced", "burst"):
        p = data[name]
        out.append(
            f"| {name} | {p['n']} | {report.ms(p['p50_s'])} | {report.ms(p['p99_s'])} "
            f"| {report.ms(p['max_s'])} |"
        )
    verdict = "met" if data["meets_goal"] else "missed"
    out += ["", f"Goal {data['goal']}: {verdict}."]
    out.append("Raw values: `bench/results/discord_latency.json`.")
    return out


if __name__ == "__main__":
    run()
