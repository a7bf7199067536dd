"""Faults injected into the whole running program, each followed by a job that succeeds.

The child runs through tests/system/faultinject.py (prompt markers and flag files switch the
faults on) so the engine itself carries no test hooks. Unit-level versions of these faults live
in tests/engine/test_faults.py and tests/bot/test_delivery.py; here the same faults hit the real
process with the gallery and the Discord client around it: the user is told, /healthz says
degraded while it lasts, nothing is half-written, lost or doubled.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.discord import FakeDiscord
from tests.system.audit import audit_discord, audit_store
from tests.system.faultinject import ENOSPC_FLAG, HANG, OOM, RAISE
from tests.system.harness import (
    ApiClient,
    Program,
    delivered,
    get_json,
    get_text,
    imagine,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    folder = tmp_path / "flags"
    folder.mkdir()
    return folder


@pytest.fixture
def faulty_program(
    make_program: Callable[..., Program], fake: FakeDiscord, flags: Path
) -> Callable[..., Program]:
    """Return a factory of programs run through the fault injector, talking to the fake."""

    def make(**overrides: Any) -> Program:
        return make_program(
            fake,
            entry="tests.system.faultinject",
            env={"IMAGINE_FAULT_DIR": str(flags), "IMAGINE_FAULT_HANG_S": "6"},
            **overrides,
        )

    return make


async def finish(program: Program, fake: FakeDiscord) -> None:
    """Stop the program cleanly and audit its data and the fake's record."""
    assert await program.terminate() == 0, program.tail()
    verdict = audit_store(program)
    assert verdict.problems == []
    assert audit_discord(program, fake)["problems"] == []


async def wait_job(client: ApiClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        job = await client.job(job_id)
        return job if job["state"] in ("done", "failed", "cancelled") else None

    deadline = asyncio.get_running_loop().time() + timeout_s
    while (job := await ended()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} did not end"
        await asyncio.sleep(0.2)
    return job


async def test_disk_full_during_an_image_write_fails_the_job_and_the_next_succeeds(
    fake: FakeDiscord, faulty_program: Callable[..., Program], flags: Path
) -> None:
    program = faulty_program()
    await program.start()
    client = ApiClient(program)
    alice = fake.user("alice")
    try:
        (flags / ENOSPC_FLAG).touch()
        handle = await imagine(fake, alice, "a fox on a full disk", count=2)
        status, answer = await client.submit({"prompt": "a web fox on a full disk", "count": 2})
        assert status == 202
        web_job = await wait_job(client, answer["job_id"])
        row, message = await delivered(program, fake, handle)
        health_status, health = get_json(program, "/healthz")

        assert web_job["state"] == "failed" and "No space left" in web_job["error"]
        assert row["state"] == "failed" and "No space left" in row["error"]
        assert "No space left" in message.content and not message.attachments
        assert health_status == 200 and health["status"] == "degraded", health
        assert any("No space left" in problem for problem in health["degraded"])
        assert sorted(p.name for p in program.images_dir.iterdir()) == []

        (flags / ENOSPC_FLAG).unlink()
        again = await imagine(fake, alice, "a fox after the disk was freed")
        status, answer = await client.submit({"prompt": "a web fox after the disk was freed"})
        assert (await wait_job(client, answer["job_id"]))["state"] == "done"
        row, message = await delivered(program, fake, again)
        assert row["state"] == "done" and [a.filename for a in message.attachments] == [
            f"{row['id']}-0.png"
        ]
        assert get_json(program, "/healthz")[1]["status"] == "ok"
    finally:
        await client.close()
    await finish(program, fake)


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
end = time.monotonic() + float(sys.argv[2])
holds = 0
while time.monotonic() < end:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS intruder (n INTEGER)")
    conn.execute("INSERT INTO intruder VALUES (1)")
    time.sleep(float(sys.argv[3]))
    conn.execute("COMMIT")
    holds += 1
    time.sleep(0.1)
print(holds, flush=True)
"""


async def test_sqlite_busy_from_a_concurrent_writer_is_waited_out_and_nothing_doubles(
    fake: FakeDiscord, make_program: Callable[..., Program]
) -> None:
    program = make_program(fake, engine={"busy_timeout_s": 0.5})
    await program.start()
    client = ApiClient(program)
    users = [fake.user(name) for name in ("alice", "bob", "owner")]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(program.db_path), "6", "0.8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        handles, web_ids = [], []
        for n in range(9):
            handles.append(await imagine(fake, users[n % 3], f"busy fox {n}", seed=n))
            status, answer = await client.submit({"prompt": f"busy web fox {n}"}, key=f"busy-{n}")
            assert status == 202, answer
            web_ids.append(answer["job_id"])
            await asyncio.sleep(0.3)
        out, _ = await asyncio.to_thread(writer.communicate, timeout=60)
        holds = int(out.strip())
        for job_id in web_ids:
            assert (await wait_job(client, job_id))["state"] == "done"
        rows = [(await delivered(program, fake, handle))[0] for handle in handles]
    finally:
        writer.kill()
        await client.close()

    assert holds >= 4, "the other writer never held the lock"
    assert [row["state"] for row in rows] == ["done"] * 9
    assert len(program.job_rows()) == 18
    assert "database busy, retrying" in program.log_text(), "the writer never got in the way"
    await finish(program, fake)


async def test_a_hanging_step_is_cut_by_the_watchdog_and_the_next_job_runs(
    fake: FakeDiscord, faulty_program: Callable[..., Program]
) -> None:
    program = faulty_program(engine={"job_timeout_s": 2, "hang_grace_s": 1})
    await program.start()
    alice = fake.user("alice")

    hung = await imagine(fake, alice, f"{HANG} a fox that never finishes", steps=4)
    row, message = await delivered(program, fake, hung, timeout_s=60)
    health = get_json(program, "/healthz")[1]
    after = await imagine(fake, alice, "a fox after the hang")
    next_row, next_message = await delivered(program, fake, after, timeout_s=60)

    assert row["state"] == "failed" and "timed out after 2 s" in row["error"]
    assert "timed out" in message.content and not message.attachments
    assert health["status"] == "degraded"
    assert any("hung" in problem for problem in health["degraded"]), health
    assert next_row["state"] == "done" and next_message.attachments
    await finish(program, fake)


async def test_an_exception_and_out_of_memory_fail_only_their_jobs(
    fake: FakeDiscord, faulty_program: Callable[..., Program]
) -> None:
    program = faulty_program()
    await program.start()
    alice, bob = fake.user("alice"), fake.user("bob")

    boom = await imagine(fake, alice, f"{RAISE} a fox")
    oom = await imagine(fake, bob, f"{OOM} a fox")
    fine = await imagine(fake, alice, "a fox", seed=3)
    boom_row, boom_message = await delivered(program, fake, boom)
    oom_row, oom_message = await delivered(program, fake, oom)
    fine_row, fine_message = await delivered(program, fake, fine)
    metrics = get_text(program, "/metrics")

    assert boom_row["state"] == "failed" and "RuntimeError" in boom_row["error"]
    assert "Failed" in boom_message.content and not boom_message.attachments
    assert oom_row["state"] == "failed" and "out of memory" in oom_row["error"]
    assert "out of memory" in oom_message.content
    assert fine_row["state"] == "done" and fine_message.attachments
    assert 'imagine_failures_total{reason="out_of_memory"} 1.0' in metrics, metrics
    assert "retrying once with attention slicing" in program.log_text()
    await finish(program, fake)


async def test_a_discord_fault_storm_still_delivers_every_result_once_without_rerunning(
    fake: FakeDiscord, make_program: Callable[..., Program]
) -> None:
    program = make_program(fake, bot={"progress_interval_s": 0.5})
    await program.start()
    users = [fake.user(name) for name in ("alice", "bob", "owner", "mod")]
    fake.fail_next("PATCH", r"/messages/@original$", 429, count=4, retry_after=0.3)
    fake.fail_next("PATCH", r"/messages/@original$", 502, count=3)
    fake.fail_next("PATCH", r"/messages/@original$", "reset", count=2)
    fake.fail_next("POST", r"/channels/\d+/messages$", 503, count=1)

    handles = [await imagine(fake, user, f"storm fox {n}", steps=4) for n, user in enumerate(users)]
    late = handles[0]
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{late.id}/"))
    fake.expire_token(late.token)
    await fake.drop_gateway(None)
    await fake.wait_for_gateway(lambda e: e.direction == "in" and e.op == 6, timeout_s=30)
    after_drop = await imagine(fake, users[1], "a fox after the gateway came back")
    handles.append(after_drop)
    results = [await delivered(program, fake, handle, timeout_s=90) for handle in handles]

    injected = [call for call in fake.calls if call.fault]
    late_row, late_message = results[0]
    assert len(injected) >= 6, [str(c) for c in injected]
    assert all(row["state"] == "done" and row["attempts"] == 1 for row, _ in results)
    assert all(message.attachments for _, message in results)
    assert json.loads(late_row["delivery"])["mode"] == "channel"
    assert late_message.content.startswith(f"<@{users[0].id}>")
    assert late_message.allowed_mentions is not None
    assert [int(u) for u in late_message.allowed_mentions.get("users", [])] == [users[0].id]
    assert not late_message.allowed_mentions.get("parse")
    await finish(program, fake)


async def test_a_missing_model_stops_the_program_at_start_with_what_to_do(
    make_program: Callable[..., Program], tmp_path: Path
) -> None:
    program = make_program(engine={"model": str(tmp_path / "no-such-model")})
    program.spawn()

    code = await program.wait_exit(120)

    last = program.log_text().strip().splitlines()[-1]
    assert code == 2, program.tail()
    assert last.startswith("imagine: ") and "no such file or folder" in last, last
    assert "engine.model" in last, last


async def test_sigterm_answers_every_submission_in_flight_with_202_or_503(
    make_program: Callable[..., Program],
) -> None:
    program = make_program()
    await program.start()
    client = ApiClient(program)
    statuses: Counter[int] = Counter()
    keys_by_status: dict[int, set[str]] = {}
    stopping = asyncio.Event()

    async def submit_until_down(worker: int) -> None:
        n = 0
        while True:
            body = {"prompt": f"fox {worker} {n}", "steps": 8, "width": 128, "height": 128}
            key = f"term-{worker}-{n}"
            status, _ = await client.submit(body, key=key)
            statuses[status] += 1
            keys_by_status.setdefault(status, set()).add(key)
            if status == 0 and stopping.is_set():
                return
            n += 1

    try:
        workers = [asyncio.create_task(submit_until_down(w)) for w in range(6)]
        await asyncio.sleep(1.5)
        stopping.set()
        code = await program.terminate()
        await asyncio.wait_for(asyncio.gather(*workers), 60)
    finally:
        await client.close()

    stored = {row["idempotency_key"].rsplit(":", 1)[-1] for row in program.job_rows()}
    assert code == 0, program.tail()
    assert statuses[202] > 0
    assert keys_by_status[202] <= stored
    assert not stored & keys_by_status.get(503, set()), "a job stored for a 503 answer"
    assert set(statuses) <= {202, 503, 0}, (
        f"{statuses}; stored despite an error answer: {sorted(stored - keys_by_status[202])}"
    )
