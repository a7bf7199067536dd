"""Run the real program (`python -m bot`) as a child process on a data folder that outlives it.

The child gets a tiny model built once per session, a temporary data folder, the gallery on a
free 127.0.0.1 port and, when a FakeDiscord is given, `[bot] api_base`/`gateway_url` pointing
at it (the fake runs on the test's own event loop) and `DISCORD_TOKEN` set. It can be killed
with SIGKILL or stopped with SIGTERM and started again on the same data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import wait_until as poll
from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    """Write tables of scalars and lists, and tables of tables, as TOML (enough for config.toml)."""
    lines: list[str] = []
    nested: dict[str, dict[str, Any]] = {}
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):  # a table of tables: [models.<name>]
                nested[f"{name}.{key}"] = value
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines) + ("\n" + toml_text(nested) if nested else "")


def base_config(model: Path, data: Path, port: int) -> dict[str, dict[str, Any]]:
    """Return config tables for fast, small, unthrottled jobs (override per test)."""
    return {
        "engine": {
            "model": str(model),
            "data_dir": str(data),
            "threads": 1,
            "offline": True,
            "max_attempts": 3,
            "preview_every_steps": 2,
        },
        "limits": {
            "default_steps": 2,
            "max_steps": 8,
            "max_size_px": 128,
            "max_count": 2,
            "max_queue": 10_000,
            "max_per_user": 10_000,
            "cooldown_s": 0,
            "daily_quota": 0,
        },
        "bot": {"progress_interval_s": 0.5},
        "web": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": port,
            "generate_rate_limit": "100000 per minute",
        },
    }


def merge(base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]) -> None:
    """Update config tables in place, key by key."""
    for name, values in overrides.items():
        base.setdefault(name, {}).update(values)


class Program:
    """One `python -m bot` installation: config, data folder, log; started and killed at will."""

    def __init__(
        self,
        folder: Path,
        model: Path,
        fake: FakeDiscord | None = None,
        entry: str = "bot",
        env: dict[str, str] | None = None,
        **overrides: dict[str, Any],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.data_dir = folder / "data"
        self.config_path = folder / "config.toml"
        self.log_path = folder / "program.log"
        self.port = free_port()
        self.fake = fake
        self.entry = entry
        self.env = env or {}
        self.config = base_config(model, self.data_dir, self.port)
        if fake is not None:
            merge(
                self.config, {"bot": {"api_base": fake.api_base, "gateway_url": fake.gateway_url}}
            )
        merge(self.config, overrides)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []
        self.peak_rss_kb = 0
        self.write_config()

    # -- config and paths ------------------------------------------------------------------

    def write_config(self) -> None:
        """Write the current config tables to config.toml."""
        self.config_path.write_text(toml_text(self.config), encoding="utf-8")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "imagine.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Return everything the program printed, over all its starts."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # -- starting --------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the child; its stdout and stderr go to program.log."""
        assert not self.is_running(), "already running"
        env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if self.fake is not None:
            env["DISCORD_TOKEN"] = self.fake.token
        env.update(self.env)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.entry, "--config", str(self.config_path)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child and wait until the gallery is healthy (and Discord is connected)."""
        session = self.fake.gateway.session if self.fake is not None else None
        self.spawn()
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(self._is_healthy):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy /healthz in {timeout_s} s:\n{self.tail()}")
            await asyncio.sleep(0.1)
        if self.fake is not None:
            await self._wait_discord(session, deadline)

    def start_sync(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child (no Discord) and wait for a healthy /healthz, blocking."""
        assert self.fake is None, "a program talking to the fake needs the test's event loop"
        self.spawn()
        deadline = time.monotonic() + timeout_s
        while not self._is_healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy /healthz in {timeout_s} s:\n{self.tail()}")
            time.sleep(0.1)

    async def _wait_discord(self, old_session: Any, deadline: float) -> None:
        assert self.fake is not None
        gateway = self.fake.gateway
        while not (
            gateway.session is not None
            and gateway.session is not old_session
            and gateway.session.connection is not None
            and gateway.is_ready.is_set()
            and self.fake.commands()
        ):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not reach READY:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def _is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the program exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of the program's log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- stopping --------------------------------------------------------------------------

    def memory_kb(self, field: str = "VmHWM") -> int:
        """Return a memory figure of the running child from /proc/<pid>/status (kB; 0 if gone)."""
        with contextlib.suppress(OSError, AssertionError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        """Return the CPU seconds (user + system) the running child has used so far."""
        with contextlib.suppress(OSError, AssertionError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def sample_rss(self) -> int:
        """Read the child's peak resident memory (VmHWM, kB) and keep the highest seen."""
        if self.is_running():
            self.peak_rss_kb = max(self.peak_rss_kb, self.memory_kb("VmHWM"))
        return self.peak_rss_kb

    def send(self, signum: int) -> None:
        """Send a signal to the running child."""
        assert self.proc is not None
        self.sample_rss()
        self.proc.send_signal(signum)

    async def wait_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Wait for the child to exit; return its exit code (negative: killed by a signal)."""
        assert self.proc is not None
        code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout_s)
        self.exit_codes.append(code)
        return code

    async def kill(self) -> int:
        """SIGKILL the child and reap it."""
        self.send(signal.SIGKILL)
        return await self.wait_exit(30)

    async def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the child and wait for its clean exit."""
        self.send(signal.SIGTERM)
        return await self.wait_exit(timeout_s)

    def terminate_sync(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the child and wait, blocking (SIGKILL if it does not go)."""
        assert self.proc is not None
        self.send(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(30)
        self.exit_codes.append(code)
        return code

    def ensure_stopped(self) -> None:
        """Kill the child if it still runs (fixture teardown)."""
        if self.is_running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(30)

    # -- looking inside ----------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """Open the program's SQLite database read-only (safe while it runs: WAL)."""
        uri = f"file:{self.db_path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    def job_count(self) -> int:
        """Return how many job rows the database holds (0 before it exists)."""
        if not self.db_path.exists():
            return 0
        with contextlib.closing(self.db()) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def job_rows(self) -> list[dict[str, Any]]:
        """Return every job row as a dict."""
        with contextlib.closing(self.db()) as conn:
            return [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY seq")]

    def image_rows(self) -> list[dict[str, Any]]:
        """Return every image row as a dict."""
        with contextlib.closing(self.db()) as conn:
            return [dict(row) for row in conn.execute("SELECT * FROM images ORDER BY n")]

    def integrity(self) -> str:
        """Return SQLite's integrity check verdict on the program's database."""
        with contextlib.closing(self.db()) as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def wait_until(predicate: Any, timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll `predicate` every 0.1 s (it reads the program's database) until it is truthy."""
    return await poll(predicate, timeout_s, every_s)


class ApiClient:
    """A JSON API client that keeps its cookie (its identity) across restarts, like a browser.

    `address` (127.0.0.N) makes it another client address, so another requester.
    """

    def __init__(self, program: Program, address: str | None = None) -> None:
        import aiohttp

        self.program = program
        connector = aiohttp.TCPConnector(local_addr=(address, 0)) if address else None
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=30),
            connector=connector,
        )

    async def submit(self, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
        """POST /api/v1/generations; return (status, JSON body); status 0: no answer."""
        import aiohttp

        headers = {"Idempotency-Key": key} if key else {}
        url = self.program.base_url + "/api/v1/generations"
        try:
            async with self.session.post(url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return 0, None

    async def job(self, job_id: str) -> dict[str, Any]:
        """GET /api/v1/jobs/<id>."""
        url = f"{self.program.base_url}/api/v1/jobs/{job_id}"
        async with self.session.get(url) as response:
            assert response.status == 200, (response.status, await response.text())
            return dict(await response.json())

    async def close(self) -> None:
        await self.session.close()


async def imagine(fake: FakeDiscord, user: Any, prompt: str, **options: Any) -> Any:
    """Send /imagine in the fake's #general with fast defaults (2 steps); return the handle."""
    values = {"prompt": prompt, "steps": 2, **options}
    return await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, user, "imagine", values
    )


def job_row(program: Program, key: str) -> dict[str, Any] | None:
    """Return the job row stored under an idempotency key (an interaction id), or None."""
    with contextlib.closing(program.db()) as conn:
        row = conn.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
    return dict(row) if row else None


async def delivered(
    program: Program, fake: FakeDiscord, handle: Any, timeout_s: float = 60
) -> tuple[dict[str, Any], Any]:
    """Wait until an interaction's job is delivered; return its row and the fake's message."""

    def done() -> dict[str, Any] | None:
        row = job_row(program, str(handle.id))
        return row if row and row["delivered_at"] is not None else None

    row = await wait_until(done, timeout_s)
    note = json.loads(row["delivery"])
    return row, fake.message(int(note["message_id"]))


def get_json(program: Program, path: str) -> tuple[int, Any]:
    """GET a JSON document from the gallery (any status)."""
    try:
        with urllib.request.urlopen(program.base_url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def get_text(program: Program, path: str) -> str:
    """GET a text document from the gallery."""
    with urllib.request.urlopen(program.base_url + path, timeout=10) as response:
        return str(response.read().decode())
