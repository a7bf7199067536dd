"""`python -m web`: starts engine and gallery, answers /healthz, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(url: str, deadline: float, process: subprocess.Popen[bytes]) -> dict[str, object]:
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError("the gallery did not answer /healthz in time")


def test_python_m_web_serves_and_stops_on_sigterm(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[engine]\nmodel = "{tiny_model_dir}"\ndata_dir = "{tmp_path / "data"}"\nthreads = 1\n'
        f'[web]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = _health(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 90, process)
        assert body["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]


def test_python_m_web_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[web]\nport = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "web", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "web.port" in result.stderr
