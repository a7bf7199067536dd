"""`python -m bot` as a subprocess against the fake: a bad token exits 2 with one clear line
(and never prints the token); without a token it runs the engine alone; SIGHUP reloads; SIGTERM
exits 0; with a good token it answers /imagine end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import discord
import pytest

from tests.bot.conftest import wait_for
from tests.fakes.discord import FakeDiscord

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def write_config(
    path: Path, model: Path, data: Path, fake: FakeDiscord, web: str = "enabled = false"
) -> Path:
    path.write_text(
        f"""
[engine]
model = {str(model)!r}
data_dir = {str(data)!r}
threads = 1
[limits]
default_steps = 2
[bot]
api_base = {fake.api_base!r}
gateway_url = {fake.gateway_url!r}
[web]
{web}
""",
        encoding="utf-8",
    )
    return path


class Process:
    """A `python -m bot` child whose stderr is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path, token: str | None) -> Process:
        env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        if token is not None:
            env["DISCORD_TOKEN"] = token
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_line(self, text: str, timeout_s: float = 60) -> str:
        return await wait_for(
            lambda: next((ln for ln in self.lines if text in ln), None), timeout_s
        )

    async def exit_code(self, timeout_s: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.wait_for(self._reader, 5)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
async def fake() -> FakeDiscord:
    async with FakeDiscord(heartbeat_interval_s=0.5, point_discord_py=False) as server:
        yield server


async def test_bad_token_exits_2_with_one_clear_line_and_no_token(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake)
    secret = "not-the-token-SECRET-31337"

    process = await Process.start(config, secret)

    assert await process.exit_code() == 2
    assert process.lines[-1] == (
        "imagine: Discord refused the bot token in DISCORD_TOKEN; "
        "copy a fresh one from the Developer Portal (Bot → Reset Token)"
    )
    assert secret not in process.output
    assert [c.path for c in fake.calls] == ["/api/v10/users/@me"]
    assert [e for e in fake.gateway_events if e.direction == "open"] == []


async def test_without_a_token_runs_the_engine_reloads_on_sighup_and_exits_0_on_sigterm(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake)

    process = await Process.start(config, None)
    await process.wait_line("no DISCORD_TOKEN set: running the engine and gallery only")
    await process.wait_line(f"model: {tiny_model_dir} on cpu")
    await process.wait_line(f"data: {tmp_path / 'data'}")
    config.write_text(config.read_text() + "\n[moderation]\nblocklist = 7\n")
    process.proc.send_signal(signal.SIGHUP)
    bad = await process.wait_line("config not reloaded")
    process.proc.send_signal(signal.SIGTERM)

    assert "moderation.blocklist" in bad
    assert await process.exit_code() == 0
    assert fake.calls == []


async def test_the_program_answers_imagine_end_to_end_and_stops_on_sigterm(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake)
    process = await Process.start(config, fake.token)
    await fake.wait_ready(timeout_s=60)
    await wait_for(lambda: fake.commands(), 30)

    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, fake.user("alice"), "imagine", {"prompt": "a fox"}
    )

    def result() -> bool:
        message = fake.original_response(handle.token)
        return bool(message and message.attachments and message.embeds)

    await wait_for(result, 60)
    process.proc.send_signal(signal.SIGTERM)
    assert await process.exit_code() == 0
    assert fake.token not in process.output


async def test_settings_chosen_in_the_program_hold_across_a_restart(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The user's walk: /settings → 16:9, a plain /imagine is wide; after a restart, still."""
    config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake)
    alice = fake.user("alice")

    async def wide_result() -> bool:
        handle = await fake.send_slash_command(
            fake.guild.id, fake.text_channel.id, alice, "imagine", {"prompt": "a fox"}
        )

        def result() -> discord.Embed | None:
            message = fake.original_response(handle.token)
            done = message and message.attachments and message.embeds
            return discord.Embed.from_dict(message.embeds[0]) if done else None

        embed = await wait_for(result, 60)
        size = next(f.value for f in embed.fields if f.name == "Size")
        width, height = (int(side) for side in str(size).split("×"))
        return width > height

    process = await Process.start(config, fake.token)
    await fake.wait_ready(timeout_s=60)
    await wait_for(lambda: fake.commands(), 30)
    opened = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, alice, "settings", {}
    )
    panel = await wait_for(lambda: fake.original_response(opened.token), 30)
    chose = await fake.press_button(
        panel.id, "imagine:set:aspect", alice, component_type=3, values=["16:9"]
    )
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{chose.id}/"))
    assert await wide_result()
    process.proc.send_signal(signal.SIGTERM)
    assert await process.exit_code() == 0

    old_session = fake.gateway.session
    again = await Process.start(config, fake.token)

    def fresh_ready() -> bool:
        session = fake.gateway.session
        is_new = session is not None and session is not old_session
        return bool(is_new and session.connection is not None and fake.gateway.is_ready.is_set())

    await wait_for(fresh_ready, 60)
    await asyncio.sleep(0.5)  # discord.py's on_ready follows READY (guild_ready_timeout)
    assert await wide_result()
    again.proc.send_signal(signal.SIGTERM)
    assert await again.exit_code() == 0


async def test_refused_intents_exit_2_with_one_clear_line(tiny_model_dir: Path, tmp_path: Path):
    refused = discord.Intents(guilds=True).value
    async with FakeDiscord(point_discord_py=False, disallowed_intents=refused) as fake:
        config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake)

        process = await Process.start(config, fake.token)

        assert await process.exit_code() == 2
        assert process.lines[-1].startswith("imagine: Discord refused the gateway intents")
        opens = [e for e in fake.gateway_events if e.direction == "open"]
        assert len(opens) == 1, "no reconnect loop"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_gallery_is_served_beside_the_engine(
    fake: FakeDiscord, tiny_model_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    web = f'enabled = true\nhost = "127.0.0.1"\nport = {port}'
    config = write_config(tmp_path / "config.toml", tiny_model_dir, tmp_path / "data", fake, web)

    process = await Process.start(config, None)
    await process.wait_line(f"gallery: http://127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        status = response.status
    process.proc.send_signal(signal.SIGTERM)

    assert status in (200, 503)
    assert await process.exit_code() == 0
