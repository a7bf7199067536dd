"""Remote GPU workers for real: the front (`python -m bot`), its own redis-server, worker boxes
(`python -m engine worker`), all on 127.0.0.1, each process stopped by its pid.

Fairness across boxes, previews, cancel, boxes SIGKILLed mid-job, Redis killed mid-run, the
front killed mid-run, boxes with other models or none, a bad broker: nothing accepted is
lost, every job ends done exactly once, with one image set.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.discord import FakeDiscord
from tests.system.audit import audit_store
from tests.system.harness import (
    ApiClient,
    Program,
    delivered,
    get_text,
    imagine,
    job_row,
    wait_until,
)
from tests.system.remote import BoxProcess, RedisServer

pytestmark = pytest.mark.timeout(600)

REMOTE = {"workers": "celery", "worker_timeout_s": 3, "max_attempts": 5, "job_timeout_s": 120}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_box(
    tiny_model_dir: Path, tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[..., BoxProcess]]:
    made: list[BoxProcess] = []

    def make(
        name: str, start: bool = True, tables: dict[str, Any] | None = None, **engine: Any
    ) -> BoxProcess:
        box = BoxProcess(
            tmp_path / name, tiny_model_dir, redis_server.url, name, tables=tables, **engine
        )
        made.append(box)
        if start:
            box.start()
        return box

    yield make
    for box in made:
        box.stop()


@pytest.fixture
def front(make_program: Callable[..., Program], redis_server: RedisServer) -> Program:
    return make_program(
        engine={**REMOTE, "broker_url": redis_server.url}, limits={"max_steps": 200}
    )


@pytest.fixture
async def client(front: Program) -> AsyncIterator[ApiClient]:
    api = ApiClient(front)
    yield api
    await api.close()


async def submit(client: ApiClient, prompt: str, **fields: Any) -> str:
    status, body = await client.submit({"prompt": prompt, "steps": 2, "seed": 1, **fields})
    assert status == 202, (status, body)
    return str(body["job_id"])


def jobs_by_state(program: Program) -> Counter[str]:
    return Counter(row["state"] for row in program.job_rows())


def rows(program: Program) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in program.job_rows()}


async def all_done(program: Program, ids: list[str], timeout_s: float = 240) -> None:
    def ended() -> bool:
        states = rows(program)
        return all(states.get(i, {}).get("state") in ("done", "failed", "cancelled") for i in ids)

    await wait_until(ended, timeout_s, every_s=0.25)


def assert_each_done_once(program: Program, boxes: list[BoxProcess], ids: list[str]) -> None:
    """Every job done, one image set each, no temp file, and no job completed on two boxes."""
    states = rows(program)
    assert [states[i]["state"] for i in ids] == ["done"] * len(ids), {
        i: (states[i]["state"], states[i]["error"]) for i in ids
    }
    verdict = audit_store(program)
    assert verdict.problems == [], verdict.problems
    completed = Counter(run.split(":")[0] for box in boxes for run in box.completed_runs())
    twice = {job: n for job, n in completed.items() if n > 1 and job in ids}
    assert twice == {}, f"jobs completed more than once: {twice}"


async def test_fairness_previews_and_models_across_boxes(
    front: Program, make_box: Callable[..., BoxProcess]
) -> None:
    """3 users, 2 boxes: B's and C's first jobs start before A's second; previews stream."""
    await front.start()
    boxes = [make_box("box-a"), make_box("box-b")]
    # Four people: four client addresses (the API counts a cookieless client by its address).
    users = {name: ApiClient(front, f"127.0.0.{n + 2}") for n, name in enumerate("zabc")}
    try:
        blockers = [
            await submit(users["z"], f"z {n}", steps=24, width=64, height=64) for n in (1, 2)
        ]
        await wait_until(lambda: all(rows(front)[j]["state"] == "running" for j in blockers), 60)
        a = [await submit(users["a"], f"a {n}") for n in range(3)]
        b = [await submit(users["b"], f"b {n}") for n in range(2)]
        c = [await submit(users["c"], "c 0")]
        watched = await submit(users["c"], "c watched", steps=12)
        events = await read_events(front, watched)
        ids = [*blockers, *a, *b, *c, watched]
        await all_done(front, ids)
    finally:
        for api in users.values():
            await api.close()
    started = {job: row["started_at"] for job, row in rows(front).items()}
    order = sorted(ids, key=lambda j: started[j])
    names = {
        j: n for n, js in {"z": blockers, "a": a, "b": b, "c": [*c, watched]}.items() for j in js
    }
    print(
        "REMOTE start order:",
        " ".join(f"{names[j]}@{started[j] - started[order[0]]:.2f}s" for j in order),
    )
    assert started[b[0]] < started[a[1]] and started[c[0]] < started[a[1]]
    assert started[b[1]] < started[a[2]]
    steps = [data["step"] for name, data in events if name == "progress"]
    assert steps == sorted(steps) and steps[-1] == 12, events
    assert any(data.get("preview") for name, data in events if name == "progress")
    assert events[-1][0] == "done"
    workers = {rows(front)[j]["worker"] for j in ids}
    assert workers == {"box-a/local", "box-b/local"}
    assert_each_done_once(front, boxes, ids)


async def test_discord_sees_a_remote_jobs_progress_and_preview_then_its_image(
    fake: FakeDiscord,
    make_program: Callable[..., Program],
    redis_server: RedisServer,
    make_box: Callable[..., BoxProcess],
) -> None:
    """/imagine on a front with one box: the reply is edited through steps with a preview."""
    front = make_program(
        fake,
        engine={**REMOTE, "broker_url": redis_server.url},
        limits={"max_steps": 200},
        bot={"progress_interval_s": 0.2},
    )
    await front.start()
    box = make_box("box-a")
    handle = await imagine(fake, fake.user("alice"), "a remote fox", steps=24)
    row, message = await delivered(front, fake, handle, 180)
    assert row["worker"] == "box-a/local"
    lines = [h.get("content") or "" for h in message.history]
    steps = [int(line.split("Step ")[1].split("/")[0]) for line in lines if "🎨 Step" in line]
    assert steps and steps == sorted(steps), lines
    previews = [
        h for h in message.history if any(a["filename"] == "preview.png" for a in h["attachments"])
    ]
    assert previews, lines
    assert len(message.attachments) == 1 and message.attachments[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    assert job_row(front, str(handle.id)) is not None
    assert box.completed_runs() == [f"{row['id']}:1"]


async def read_events(program: Program, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Follow a job's event stream to its end, as the job page does."""

    def read() -> list[tuple[str, dict[str, Any]]]:
        url = f"{program.base_url}/jobs/{job_id}/events"
        events: list[tuple[str, dict[str, Any]]] = []
        with urllib.request.urlopen(url, timeout=120) as stream:
            name = ""
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
        return events

    return await asyncio.to_thread(read)


async def test_cancel_stops_a_running_remote_job_and_the_box_takes_the_next(
    front: Program, make_box: Callable[..., BoxProcess], client: ApiClient
) -> None:
    await front.start()
    box = make_box("box-a")
    long = await submit(client, "long", steps=200, width=64, height=64)
    await wait_until(lambda: rows(front)[long]["state"] == "running", 60)
    await asyncio.sleep(1.5)
    cancelled_at = time.monotonic()
    await cancel_via_api(front, client, long)
    after = await submit(client, "next")
    await all_done(front, [long, after], 60)
    stopped_s = time.monotonic() - cancelled_at
    assert rows(front)[long]["state"] == "cancelled" and rows(front)[after]["state"] == "done"
    assert box.completed_runs() == [f"{after}:1"]  # the long job never completed
    print(f"REMOTE cancel: stopped and the next job done {stopped_s:.1f} s after the cancel")


async def cancel_via_api(front: Program, client: ApiClient, job_id: str) -> None:
    url = f"{front.base_url}/api/v1/jobs/{job_id}/cancel"
    async with client.session.post(url, json={}) as response:
        assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("jobs", "kills"),
    [
        pytest.param(20, 3, id="20-jobs-3-kills"),
        pytest.param(200, 20, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
    ],
)
async def test_jobs_survive_box_kills_lose_nothing_and_double_nothing(
    front: Program, make_box: Callable[..., BoxProcess], client: ApiClient, jobs: int, kills: int
) -> None:
    await front.start()
    boxes = [make_box("box-a"), make_box("box-b")]
    ids = [
        await submit(client, f"fox {n}", steps=24, width=64, height=64, seed=n) for n in range(jobs)
    ]
    moved: list[float] = []
    for kill in range(kills):
        # Kill whichever box is busy first (alternating when both are): waiting for one named
        # box can outlast the run when the other takes the remaining jobs.
        preferred = [boxes[kill % 2], boxes[(kill + 1) % 2]]

        def busy_box(order: list[BoxProcess] = preferred) -> tuple[BoxProcess, str] | None:
            for box in order:
                run = running_on(front, box.name)
                if run:
                    return box, run
            return None

        victim, busy = await wait_until(busy_box, 120, every_s=0.05)
        killed_at = time.monotonic()
        victim.kill()
        await asyncio.sleep(1.0)
        victim.spawn()
        await wait_until(lambda b=busy: rerunning(front, b), 120, every_s=0.05)
        moved.append(time.monotonic() - killed_at)
    await all_done(front, ids, timeout_s=240 + 5 * jobs)
    assert_each_done_once(front, boxes, ids)
    print(
        f"REMOTE {jobs} jobs, {kills} kills: job running again after "
        + ", ".join(f"{s:.1f}" for s in moved)
        + " s"
    )


def running_on(program: Program, box: str) -> str | None:
    for job_id, row in rows(program).items():
        if row["state"] == "running" and (row["worker"] or "").startswith(box + "/"):
            return f"{job_id}:{row['attempts']}"
    return None


def rerunning(program: Program, run: str) -> bool:
    job_id, attempt = run.split(":")
    row = rows(program)[job_id]
    return row["state"] == "done" or (row["state"] == "running" and row["attempts"] > int(attempt))


async def test_redis_killed_and_restarted_mid_run_every_job_ends_done(
    front: Program,
    make_box: Callable[..., BoxProcess],
    client: ApiClient,
    redis_server: RedisServer,
) -> None:
    await front.start()
    boxes = [make_box("box-a")]
    ids = [await submit(client, f"fox {n}", steps=8, width=64, height=64, seed=n) for n in range(6)]
    await wait_until(lambda: running_on(front, "box-a"), 60, every_s=0.05)
    redis_server.kill()
    await asyncio.sleep(2.0)
    health = await asyncio.to_thread(_health, front)
    redis_server.start()
    await all_done(front, ids)
    assert health["status"] == "degraded"
    assert any("broker" in problem for problem in health["degraded"]), health
    states = rows(front)
    assert [states[i]["state"] for i in ids] == ["done"] * len(ids)
    assert audit_store(front).problems == []
    del boxes


def _health(program: Program) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(program.base_url + "/healthz", timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        return dict(json.loads(error.read()))


async def test_the_front_killed_mid_run_collects_or_requeues_and_runs_nothing_twice(
    front: Program, make_box: Callable[..., BoxProcess], client: ApiClient
) -> None:
    await front.start()
    boxes = [make_box("box-a"), make_box("box-b")]
    ids = [
        await submit(client, f"fox {n}", steps=10, width=64, height=64, seed=n) for n in range(8)
    ]
    await wait_until(lambda: running_on(front, "box-a") and running_on(front, "box-b"), 60, 0.05)
    await front.kill()
    await asyncio.sleep(2.0)  # the boxes finish what they run while the front is away
    await front.start()
    await all_done(front, ids)
    assert_each_done_once(front, boxes, ids)
    log = front.log_text()
    collected, followed = log.count("collected task "), log.count("following task ")
    rerun = sum(1 for i in ids if rows(front)[i]["attempts"] > 1)
    assert collected + followed + rerun >= 1, log  # something was in flight at the kill
    print(
        f"REMOTE front kill: {collected} results collected from Redis, {followed} followed "
        f"to their end, {rerun} run again, 0 twice"
    )


async def test_a_frozen_box_is_given_up_its_late_result_ignored_and_pickle_refused(
    front: Program, make_box: Callable[..., BoxProcess], client: ApiClient
) -> None:
    """A box that stops answering (SIGSTOP: a hung host, a cut cable) and comes back."""
    from engine import broker

    await front.start()
    boxes = [make_box("box-a"), make_box("box-b")]
    sender = broker.make_app(boxes[0].broker_url, "test-sender")
    sender.send_task(  # a message a front never sends: pickle is refused before it is read
        broker.TASK, args=[{"x": 1}, "local"], task_id="evil:1",
        queue=broker.queue_of("box-a"), serializer="pickle",
    )  # fmt: skip
    sender.send_task(  # JSON that is not a batch: refused with a reason
        broker.TASK, args=[{"model": "tiny", "rm -rf": "/"}, "local"], task_id="odd:1",
        queue=broker.queue_of("box-a"),
    )  # fmt: skip
    job = await submit(client, "frozen", steps=200, width=64, height=64)
    run = await wait_until(lambda: running_on(front, "box-a") or running_on(front, "box-b"), 60)
    victim = next(box for box in boxes if running_on(front, box.name) == run)
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        await wait_until(lambda: rerunning(front, run), 60, every_s=0.05)
        moved_s = time.monotonic() - frozen_at
        await all_done(front, [job], 60)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    # Back again, it reads the stop key of its abandoned run, ends it, and takes work again.
    await asyncio.to_thread(victim.wait_heartbeat)
    later = [await submit(client, f"after {n}", seed=n) for n in range(4)]
    await all_done(front, later, 60)
    assert rows(front)[job]["attempts"] == 2
    assert run not in victim.completed_runs()
    assert_each_done_once(front, boxes, [job, *later])
    logs = boxes[0].log_text()
    assert "untrusted content of type pickle" in logs, boxes[0].tail()
    assert "refused task odd:1" in logs
    print(f"REMOTE frozen box: its job running elsewhere {moved_s:.1f} s after SIGSTOP")


async def test_boxes_get_only_jobs_for_the_models_they_serve(
    make_program: Callable[..., Program],
    make_box: Callable[..., BoxProcess],
    redis_server: RedisServer,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from engine import tinymodel

    other = tinymodel.build(tmp_path / "tiny-b", seed=1)
    models = {"a": {"path": str(tiny_model_dir)}, "b": {"path": str(other)}}
    front = make_program(
        engine={**REMOTE, "broker_url": redis_server.url, "model": "a"}, models=models
    )
    await front.start()
    only_b = make_box("only-b", tables={"models": {"b": {"path": str(other)}}}, model="b")
    broken = make_box("broken", model=str(tmp_path / "no-such-model"))
    api = ApiClient(front)
    try:
        job_b = await submit(api, "for b", model="b")
        await all_done(front, [job_b], 60)

        def both_listed() -> bool:
            names = {w["name"] for w in _health(front)["workers"]}
            return {"only-b/local", "broken/local"} <= names

        await wait_until(both_listed, 30)
        health = await asyncio.to_thread(_health, front)
        metrics = await asyncio.to_thread(get_text, front, "/metrics")
    finally:
        await api.close()
    assert rows(front)[job_b]["worker"] == "only-b/local"
    by_name = {w["name"]: w for w in health["workers"]}
    assert by_name["only-b/local"]["models"] == ["b"]
    assert by_name["only-b/local"]["state"] == "idle" and by_name["only-b/local"]["jobs_done"] == 1
    assert by_name["only-b/local"]["last_seen_s"] < 3
    assert 'imagine_worker_up{worker="only-b/local"} 1.0' in metrics
    assert 'imagine_worker_jobs_total{worker="only-b/local"} 1.0' in metrics
    assert by_name["broken/local"]["models"] == []
    assert any("no such file or folder" in p for p in by_name["broken/local"]["problems"])
    assert "no such file or folder" in broken.log_text()
    assert only_b.completed_runs() == [f"{job_b}:1"] and broken.completed_runs() == []


async def test_a_wrong_broker_password_is_one_line_degraded_and_local_workers_serve(
    make_program: Callable[..., Program], tmp_path: Path
) -> None:
    guarded = RedisServer(tmp_path / "guarded", password="right")
    guarded.start()
    try:
        wrong = guarded.url.replace(":right@", ":wrong@")
        front = make_program(engine={**REMOTE, "workers": "both", "broker_url": wrong})
        await front.start()
        health = await asyncio.to_thread(_health, front)
        api = ApiClient(front)
        try:
            job = await submit(api, "served locally")
            await all_done(front, [job], 60)
        finally:
            await api.close()
        assert rows(front)[job]["state"] == "done" and rows(front)[job]["worker"] == "local"
        assert health["status"] == "degraded"
        lines = [line for line in front.log_text().splitlines() if "broker unreachable" in line]
        assert len(lines) == 1, lines
        assert "wrong" not in lines[0] and "right" not in lines[0]  # no password in the log
        box = BoxProcess(tmp_path / "box", Path(front.config["engine"]["model"]), wrong, "box")
        box.spawn()
        assert box.proc is not None and box.proc.wait(120) == 2
        assert (
            box.log_text()
            .strip()
            .splitlines()[-1]
            .startswith("imagine worker: the broker refused the password")
        )
    finally:
        guarded.stop()
