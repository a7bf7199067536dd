"""Flood the running program with /imagine from many users in bursts, then from one at once.

Every interaction is acknowledged within Discord's 3 s (from the gateway frame that carries it
to its callback, both in the fake's record), refusals are ephemeral and carry a retry time where
the limit has one, the queue never grows past its cap, memory stays bounded (peak RSS from
/proc/<pid>/status VmHWM), and every accepted job is stored once and delivered once.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.system.audit import audit_discord, audit_store
from tests.system.conftest import add_users
from tests.system.faultinject import HANG
from tests.system.harness import Program, wait_until

ACK_LIMIT_S = 3.0
MAX_QUEUE = 40
MAX_PER_USER = 2
COOLDOWN_S = 1
HOLD_S = 6  # > the (MAX_PER_USER + 1) spaced sends before the solo burst
PEAK_RSS_LIMIT_MIB = 1536
EPHEMERAL = 1 << 6
RETRY_TIME = re.compile(r"in \d+ (s|min|h)")
# What a refused user reads (bot/replies.py); every refusal carries a retry time.
REFUSALS = {
    "cooldown": re.compile(r"^Slow down: you can submit again in \d+ (s|min)\.$"),
    "per_user": re.compile(r"^You already have \d+ jobs? queued \(limit \d+\)"),
    "queue_full": re.compile(r"^The queue is full \(\d+ jobs, limit \d+\)"),
}


def callbacks(fake: FakeDiscord) -> dict[int, float]:
    """Return the time of each interaction's first callback, by interaction id."""
    found: dict[int, float] = {}
    for call in fake.calls:
        if call.path.startswith("/api/v10/interactions/") and call.path.endswith("/callback"):
            found.setdefault(int(call.path.split("/")[4]), call.timestamp)
    return found


def dispatched(fake: FakeDiscord) -> dict[int, float]:
    """Return when the fake's gateway sent each INTERACTION_CREATE frame, by interaction id."""
    return {
        int(event.data["id"]): event.timestamp
        for event in fake.gateway_events
        if event.direction == "out" and event.name == "INTERACTION_CREATE"
    }


def first_answer(fake: FakeDiscord, handle: FakeInteraction) -> tuple[int, str, int]:
    """Return (callback type, content, flags) of an interaction's first callback."""
    for call in fake.calls:
        if call.path.startswith(f"/api/v10/interactions/{handle.id}/") and call.json:
            data = call.json.get("data") or {}
            return int(call.json.get("type", 0)), data.get("content") or "", data.get("flags", 0)
    return 0, "", 0


CASES = [
    pytest.param(30, 10, 10, 100, 180, id="short", marks=pytest.mark.timeout(420)),
    pytest.param(
        100, 20, 10, 2000, 900, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]
    ),
]


@pytest.mark.parametrize(("users_n", "per_user", "bursts", "solo", "drain_s"), CASES)
async def test_flood_is_acknowledged_in_time_bounded_and_delivered_once(
    fake: FakeDiscord,
    make_program: Callable[..., Program],
    tmp_path: Path,
    users_n: int,
    per_user: int,
    bursts: int,
    solo: int,
    drain_s: float,
) -> None:
    rng = random.Random(7)
    users = add_users(fake, users_n)
    flags = tmp_path / "flags"
    flags.mkdir()
    program = make_program(
        fake,
        limits={"max_queue": MAX_QUEUE, "max_per_user": MAX_PER_USER, "cooldown_s": COOLDOWN_S},
        bot={"progress_interval_s": 1.0},
        entry="tests.system.faultinject",
        env={"IMAGINE_FAULT_DIR": str(flags), "IMAGINE_FAULT_HANG_S": str(HOLD_S)},
    )
    await program.start()
    commands = [(user, n) for user in users for n in range(per_user)]
    rng.shuffle(commands)
    size = -(-len(commands) // bursts)
    sent_at: dict[int, float] = {}
    handles: list[FakeInteraction] = []
    peak_queue = 0

    async def send(user_index: int, n: int, prompt: str = "flood") -> None:
        user = users[user_index]
        options = {"prompt": f"{prompt} {user.name} {n}", "steps": 4 + n % 5, "seed": n}
        sent = time.time()
        handle = await fake.send_slash_command(
            fake.guild.id, fake.text_channel.id, user, "imagine", options
        )
        sent_at[handle.id] = sent
        handles.append(handle)

    index = {user.id: i for i, user in enumerate(users)}
    for start in range(0, len(commands), size):
        burst = commands[start : start + size]
        await asyncio.gather(*(send(index[user.id], n) for user, n in burst))
        program.sample_rss()
        peak_queue = max(peak_queue, active_jobs(program))
        await asyncio.sleep(rng.uniform(1.0, 1.5))
    # Then one user fires a whole burst at once (FAULTS 7): the cooldown and their cap refuse it.
    # A job whose first step sleeps HOLD_S (tests/system/faultinject.py) holds the worker while
    # that user queues their cap, spaced past the cooldown, so the burst meets both limits
    # however fast this machine drained the bursts.
    await send(1, per_user, prompt=f"{HANG} hold the worker")
    for n in range(MAX_PER_USER):
        await asyncio.sleep(COOLDOWN_S + 0.2)
        await send(0, per_user + n)
    await asyncio.sleep(COOLDOWN_S + 0.2)
    solo_from = len(handles)
    cpu_before = (program.cpu_s(), time.process_time())
    await asyncio.gather(*(send(0, per_user + MAX_PER_USER + n) for n in range(solo)))
    program.sample_rss()
    acked = await wait_until(lambda: len(callbacks(fake)) >= len(handles) and callbacks(fake), 30)
    cpu = (program.cpu_s() - cpu_before[0], time.process_time() - cpu_before[1])
    frames = dispatched(fake)
    latencies = sorted(acked[h.id] - frames.get(h.id, sent_at[h.id]) for h in handles)
    solo_handles = handles[solo_from:]
    solo_frames = [frames[h.id] for h in solo_handles]
    solo_acks = [acked[h.id] for h in solo_handles]

    keys = {row["idempotency_key"]: row for row in program.job_rows()}
    accepted = [h for h in handles if str(h.id) in keys]
    refused = [h for h in handles if str(h.id) not in keys]
    kinds: Counter[str] = Counter()
    strange: list[str] = []
    for handle in refused:
        kind, content, flags = first_answer(fake, handle)
        label = next((name for name, rx in REFUSALS.items() if rx.search(content)), None)
        if kind != 4 or not flags & EPHEMERAL or label is None:
            strange.append(f"{kind} {flags} {content!r}")
            continue
        kinds[label] += 1

    async def poll() -> bool:
        nonlocal peak_queue
        program.sample_rss()
        peak_queue = max(peak_queue, active_jobs(program))
        return settled(program)

    deadline = time.monotonic() + drain_s
    while not await poll():
        assert time.monotonic() < deadline, "the flood's accepted jobs were not all delivered"
        await asyncio.sleep(0.5)
    peak_rss_mib = program.sample_rss() / 1024
    assert await program.terminate() == 0, program.tail()

    verdict = audit_store(program)
    discord = audit_discord(program, fake)
    p50 = statistics.median(latencies)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(
        f"\nFLOOD {len(handles)} /imagine from {users_n} users in {bursts} bursts, then {solo} "
        f"at once from one user: "
        f"ack p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms;"
        f" {len(accepted)} accepted, refused {dict(kinds)}, peak queue {peak_queue} "
        f"(cap {MAX_QUEUE}), peak RSS {peak_rss_mib:.0f} MiB; store: {verdict.summary()}; "
        f"doubled deliveries {discord['doubled']}; the one-user burst's frames went out over "
        f"{max(solo_frames) - min(solo_frames):.2f} s, its callbacks came over "
        f"{max(solo_acks) - min(solo_frames):.2f} s (CPU meanwhile: program {cpu[0]:.1f} s, "
        f"test process with the fake {cpu[1]:.1f} s)"
    )
    assert latencies[-1] < ACK_LIMIT_S
    assert strange == [], strange[:10]
    assert peak_queue <= MAX_QUEUE
    assert peak_rss_mib < PEAK_RSS_LIMIT_MIB
    assert verdict.problems == []
    assert discord["problems"] == []
    assert len(keys) == len(accepted), "a job row for no interaction"
    assert len(kinds) >= 2, f"the flood was too gentle to reach the limits: {kinds}"


def active_jobs(program: Program) -> int:
    return sum(1 for row in program.job_rows() if row["state"] in ("queued", "running"))


def settled(program: Program) -> bool:
    rows = program.job_rows()
    return all(row["state"] not in ("queued", "running") for row in rows) and all(
        row["delivered_at"] is not None for row in rows
    )


def test_queue_full_refusals_name_a_retry_time() -> None:
    from bot import replies
    from engine import QueueFull

    for error in (QueueFull(waiting=2, limit=2, is_per_requester=True), QueueFull(40, 40)):
        text = replies.text_for(error) or ""
        assert RETRY_TIME.search(text), text
