"""Hundreds of live job pages open on the real program, and the gallery still answers.

The job page streams Server-Sent Events. The program (`python -m bot`, no Discord) runs a job
that hangs in its first step (the test-only fault injector), so a second job stays queued and
its watchers stay connected. 50 clients (loopback addresses 127.0.0.2…) open 6 streams each;
meanwhile gallery pages, API calls and image files are timed. Then the bounds: a client's 9th
stream is 429, and past the total bound a stream is 503.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.system.faultinject import HANG
from tests.system.harness import Program

pytestmark = pytest.mark.timeout(300)

CLIENTS = 50
STREAMS_EACH = 6
PER_CLIENT = 8
TOTAL = CLIENTS * STREAMS_EACH + 2
PROBES = 60


def _post_json(base: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + "/api/v1/generations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


async def _open_stream(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    response = await session.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
    if response.status == 200:
        await response.content.readuntil(b"\n\n")  # the retry line: the stream is live
    return response


def _timed(url: str) -> float:
    """Time one request from a plain client (not the loop that holds the 300 streams)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        response.read()
        assert response.status == 200, (url, response.status)
    return time.perf_counter() - started


async def test_three_hundred_open_streams_leave_pages_api_and_files_fast(
    make_program: Callable[..., Program], tmp_path: Path
) -> None:
    flags = tmp_path / "flags"
    flags.mkdir()
    program = make_program(
        entry="tests.system.faultinject",
        env={"IMAGINE_FAULT_DIR": str(flags), "IMAGINE_FAULT_HANG_S": "90"},
        web={"max_streams": TOTAL, "max_streams_per_client": PER_CLIENT},
        engine={"job_timeout_s": 120},
    )
    await program.start()
    base = program.base_url
    done = await asyncio.to_thread(_post_json, base, {"prompt": "a fox", "steps": 2})
    while (await asyncio.to_thread(_job_state, base, done["job_id"])) != "done":
        await asyncio.sleep(0.2)
    await asyncio.to_thread(_post_json, base, {"prompt": f"hang {HANG}", "steps": 2})
    waiting = await asyncio.to_thread(_post_json, base, {"prompt": "queued fox", "steps": 2})
    events = f"{base}/jobs/{waiting['job_id']}/events"
    image_id = f"{done['job_id']}-0"
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{n + 2}", 0)))
        for n in range(CLIENTS)
    ]
    streams: list[aiohttp.ClientResponse] = []
    try:
        for session in sessions:
            streams += await asyncio.gather(
                *(_open_stream(session, events) for _ in range(STREAMS_EACH))
            )
        assert [s.status for s in streams] == [200] * (CLIENTS * STREAMS_EACH)
        urls = ["/", "/api/v1/images", f"/files/{image_id}.png", f"/images/{image_id}"]
        seconds = [
            await asyncio.to_thread(_timed, base + urls[i % len(urls)]) for i in range(PROBES)
        ]
        p99 = statistics.quantiles(seconds, n=100)[98]
        print(
            f"STREAMS {len(streams)} open: {PROBES} requests p50 "
            f"{statistics.median(seconds) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {max(seconds) * 1000:.1f} ms"
        )
        assert p99 < 1.0
        over = await asyncio.gather(*(_open_stream(sessions[0], events) for _ in range(3)))
        assert sorted(s.status for s in over) == [200, 200, 429]  # 6 + 2 allowed, the 9th not
        extra = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.1.1", 0)))
        sessions.append(extra)
        refused = await _open_stream(extra, events)
        assert refused.status == 503 and refused.headers["Retry-After"]
        streams += [*over, refused]
    finally:
        for stream in streams:
            stream.close()
        for session in sessions:
            await session.close()


def _job_state(base: str, job_id: str) -> str:
    with urllib.request.urlopen(f"{base}/api/v1/jobs/{job_id}", timeout=30) as response:
        return str(json.loads(response.read())["state"])
