"""A real Redis and real worker boxes (`python -m engine worker`) for the remote-worker tests.

Each test starts its own `redis-server` (Debian's package) on a free 127.0.0.1 port, without
persistence, so it can kill and restart it; boxes are child processes on the tiny model, each
stopped by its own pid. Nothing here touches the machine's own Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from tests.system.harness import ROOT, free_port, toml_text

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 120.0


class RedisServer:
    """One redis-server of the test's own: started, killed and restarted by pid."""

    def __init__(self, folder: Path, password: str = "") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port) and wait until it answers."""
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.folder), "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL it (no persistence: everything in it is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop it at teardown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class BoxProcess:
    """`python -m engine worker` on the tiny model, with its own data folder and log."""

    def __init__(
        self,
        folder: Path,
        model_dir: Path,
        broker_url: str,
        name: str,
        tables: dict[str, Any] | None = None,
        **engine: Any,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        self.broker_url = broker_url
        self.log_path = folder / "box.log"
        self.config_path = folder / "config.toml"
        values = {
            "model": str(model_dir),
            "data_dir": str(folder / "data"),
            "broker_url": broker_url,
            "threads": 1,
            "offline": True,
            "worker_timeout_s": 3,
            "preview_every_steps": 2,
            **engine,
        }
        self.config_path.write_text(
            toml_text({"engine": values, **(tables or {})}), encoding="utf-8"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def spawn(self) -> None:
        """Start the box; its output goes to box.log."""
        env = {k: v for k, v in os.environ.items() if k != "IMAGINE_BROKER_URL"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", "--config", str(self.config_path),
                 "--name", self.name],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start and wait until its heartbeat is in Redis."""
        self.spawn()
        self.wait_heartbeat(timeout_s)

    def wait_heartbeat(self, timeout_s: float = START_TIMEOUT_S) -> None:
        client = redis.Redis.from_url(self.broker_url, socket_timeout=2)
        deadline = time.monotonic() + timeout_s
        pid = self.proc.pid if self.proc else 0
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            with contextlib.suppress(redis.RedisError):
                value = client.get(f"imagine:box:{self.name}")
                if value is not None and f'"pid": {pid}'.encode() in value:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"box {self.name} sent no heartbeat:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the box (a power cut)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop it at teardown (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def completed_runs(self) -> list[str]:
        """Return every `<job id>:<attempt>` this box finished (over all its starts)."""
        runs: list[str] = []
        for line in self.log_text().splitlines():
            if " done: " in line and "task " in line:
                runs += [run.strip() for run in line.split(" done: ", 1)[1].split(",")]
        return runs
