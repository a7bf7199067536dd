"""Kill the running program again and again while Discord and the web submit jobs; lose nothing.

Jobs go in from fake slash commands and the JSON API together; the program is SIGKILLed at
random moments (seeded) and SIGTERMed a few times, then started again on the same data. At the
end every accepted job ended exactly once (done, or failed with a reason after its bounded
retries), every done job has exactly its images on disk and in the store, every Discord job was
delivered exactly once, no temp file is left and SQLite's integrity check passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeUser
from tests.system.audit import audit_discord, audit_store
from tests.system.conftest import add_users
from tests.system.harness import ApiClient, Program, delivered, imagine, wait_until

# Seeded for reproducible kill moments; SYSTEM_TEST_SEED=<n> explores others.
SEED = int(os.environ.get("SYSTEM_TEST_SEED", "20261127"))
WEB_CLIENTS = 3
DISCORD_USERS = 4
DEFERRED = 5  # interaction callback type: DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE


@dataclass
class Ledger:
    """What the outside world was told: web keys answered 202, interactions sent."""

    web_jobs: dict[str, str] = field(default_factory=dict)
    web_pending: dict[str, tuple[ApiClient, dict[str, Any]]] = field(default_factory=dict)
    web_refusals: Counter[int] = field(default_factory=Counter)
    interactions: list[FakeInteraction] = field(default_factory=list)
    # Cleared while the program is down: a Discord user whose command went unanswered tries
    # again once the bot is back (Discord never delivers an interaction to a later session).
    bot_up: asyncio.Event = field(default_factory=asyncio.Event)


def job_body(rng: random.Random, n: int) -> dict[str, Any]:
    size = rng.choice([32, 64, 96, 128])  # bigger images keep the worker busy when the kill comes
    return {
        "prompt": f"web fox {n}",
        "steps": rng.randint(2, 4),
        "seed": n,
        "count": 1,
        "width": size,
        "height": size,
    }


async def submit_web(ledger: Ledger, client: ApiClient, key: str, body: dict[str, Any]) -> None:
    status, answer = await client.submit(body, key)
    if status == 202:
        previous = ledger.web_jobs.setdefault(key, answer["job_id"])
        assert previous == answer["job_id"], f"key {key} answered two jobs"
        ledger.web_pending.pop(key, None)
        return
    ledger.web_pending[key] = (client, body)
    if status:
        ledger.web_refusals[status] += 1


async def submit_discord(
    ledger: Ledger, fake: FakeDiscord, user: FakeUser, options: dict[str, Any]
) -> None:
    await ledger.bot_up.wait()
    handle = await fake.send_slash_command(
        fake.guild.id, fake.text_channel.id, user, "imagine", options
    )
    ledger.interactions.append(handle)


async def submit_round(
    ledger: Ledger,
    fake: FakeDiscord,
    clients: list[ApiClient],
    users: list[FakeUser],
    rng: random.Random,
    numbers: range,
) -> None:
    tasks = []
    for n in numbers:
        await asyncio.sleep(rng.uniform(0, 0.15))
        if rng.random() < 0.5:
            client = rng.choice(clients)
            tasks.append(
                asyncio.create_task(submit_web(ledger, client, f"kl-{n}", job_body(rng, n)))
            )
        else:
            options = {"prompt": f"discord fox {n}", "steps": rng.randint(2, 4), "seed": n}
            user = rng.choice(users)
            tasks.append(asyncio.create_task(submit_discord(ledger, fake, user, options)))
    await asyncio.gather(*tasks)


async def retry_pending(ledger: Ledger) -> None:
    for _attempt in range(5):
        if not ledger.web_pending:
            return
        await asyncio.gather(
            *(
                submit_web(ledger, client, key, body)
                for key, (client, body) in list(ledger.web_pending.items())
            )
        )
    assert not ledger.web_pending, f"web submissions never accepted: {sorted(ledger.web_pending)}"


def settled(program: Program) -> bool:
    rows = program.job_rows()
    if any(row["state"] in ("queued", "running") for row in rows):
        return False
    return all(
        row["delivered_at"] is not None
        for row in rows
        if row["requester_key"].startswith("discord:")
    )


CASES = [
    pytest.param(30, 5, 1, 240, id="short", marks=pytest.mark.timeout(420)),
    pytest.param(200, 20, 3, 900, id="soak", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


@pytest.mark.parametrize(("jobs", "kills", "sigterms", "drain_s"), CASES)
async def test_kill_loop_loses_and_doubles_nothing(
    fake: FakeDiscord,
    make_program: Callable[..., Program],
    jobs: int,
    kills: int,
    sigterms: int,
    drain_s: float,
) -> None:
    rng = random.Random(SEED + jobs)  # what is submitted, drawn in one task in order
    plan = random.Random(SEED - jobs)  # when the program is stopped, and how
    users = add_users(fake, DISCORD_USERS)
    program = make_program(fake)
    stops = [signal.SIGKILL] * kills + [signal.SIGTERM] * sigterms
    plan.shuffle(stops)
    delays = [plan.uniform(0.0, 1.5) for _ in stops]
    await program.start()
    clients = [ApiClient(program) for _ in range(WEB_CLIENTS)]
    ledger = Ledger()
    ledger.bot_up.set()
    started = time.monotonic()
    try:
        # One job per web client first: its answer sets the cookie that is its identity.
        for index, client in enumerate(clients):
            await submit_web(ledger, client, f"kl-warm-{index}", job_body(rng, 10_000 + index))
        assert not ledger.web_pending
        remaining = jobs - WEB_CLIENTS
        per_round = -(-remaining // (len(stops) + 1))
        chunks = [range(i, min(i + per_round, remaining)) for i in range(0, remaining, per_round)]
        chunks += [range(0)] * (len(stops) + 1 - len(chunks))
        for stop, delay, chunk in zip([*stops, None], [*delays, 0.0], chunks, strict=True):
            submitting = asyncio.create_task(submit_round(ledger, fake, clients, users, rng, chunk))
            if stop is None:
                await submitting
                break
            await asyncio.sleep(delay)
            ledger.bot_up.clear()
            if stop == signal.SIGKILL:
                assert await program.kill() == -signal.SIGKILL
            else:
                assert await program.terminate() == 0, program.tail()
            await program.start()
            ledger.bot_up.set()
            await submitting
            await retry_pending(ledger)
        await wait_until(lambda: settled(program), drain_s, every_s=0.5)
        program.sample_rss()
        assert await program.terminate() == 0, program.tail()
    finally:
        for client in clients:
            await client.close()

    verdict = audit_store(program)
    discord = audit_discord(program, fake)
    rows = {row["id"]: row for row in program.job_rows()}
    by_key = {row["idempotency_key"]: row for row in rows.values() if row["idempotency_key"]}
    web_problems = []
    for key, job_id in ledger.web_jobs.items():
        matching = [k for k in by_key if k.endswith(f":api:{key}")]
        if len(matching) != 1 or by_key[matching[0]]["id"] != job_id:
            web_problems.append(f"web key {key}: rows {matching}, answered {job_id}")
    accepted_discord = [h for h in ledger.interactions if str(h.id) in by_key]
    lost_acks = [
        h.id
        for h in ledger.interactions
        if str(h.id) not in by_key and fake.interaction(h.token).callback_type == DEFERRED
    ]
    web_rows = [row for row in rows.values() if row["requester_key"].startswith("web:")]
    accepted = len(ledger.web_jobs) + len(accepted_discord)
    accepted_ids = [*ledger.web_jobs.values(), *(by_key[str(h.id)]["id"] for h in accepted_discord)]
    lost = [i for i in accepted_ids if rows.get(i, {}).get("state") not in ("done", "failed")]
    failed = [(row["id"], row["error"]) for row in rows.values() if row["state"] == "failed"]
    retried = sum(1 for row in rows.values() if row["attempts"] > 1)
    seconds = [row["seconds"] for row in rows.values() if row["seconds"]]
    resumed = program.log_text().count("following ")
    print(
        f"\nKILL LOOP (seed {SEED}) {jobs} submitted, {accepted} accepted "
        f"({len(ledger.web_jobs)} web, "
        f"{len(accepted_discord)} discord of {len(ledger.interactions)} interactions), "
        f"{kills} SIGKILL + {sigterms} SIGTERM, {program.starts} starts, "
        f"{time.monotonic() - started:.0f} s; store: {verdict.summary()}; "
        f"lost {len(lost)}, duplicated web rows {len(web_rows) - len(ledger.web_jobs)}, "
        f"duplicated discord deliveries {discord['doubled']}, acked-then-lost {len(lost_acks)}, "
        f"web refusals {dict(ledger.web_refusals)}, failed {failed}, "
        f"{retried} jobs cut off mid-run and retried, {resumed} restarts resumed Discord jobs, "
        f"mean job {sum(seconds) / max(1, len(seconds)):.2f} s, "
        f"peak RSS {program.peak_rss_kb // 1024} MiB"
    )
    assert verdict.problems == []
    assert discord["problems"] == []
    assert web_problems == []
    assert len(web_rows) == len(ledger.web_jobs), "a web row nobody was answered for"
    assert lost == []
    assert len(rows) == accepted, json.dumps(sorted(rows))
    assert lost_acks == [], 'interactions deferred ("thinking…") whose job was never stored'
    assert all("gave up" in error or "interrupted" in error for _, error in failed), failed


def kill_when_posted(fake: FakeDiscord, program: Program, method: str, suffix: str) -> list[str]:
    """Make the fake SIGKILL the program once a result upload is stored, before it answers.

    The result then exists in Discord while the program never learned it was posted: the
    narrowest window for a second post after the restart. Return the paths it killed on.
    """
    killed: list[str] = []
    for index, (verb, pattern, template, handler) in enumerate(fake.rest.routes):
        if verb != method or not template.endswith(suffix):
            continue

        async def killing(call: Any, params: dict[str, str], handler: Any = handler) -> Any:
            response = await handler(call, params)
            is_result = any(f.filename.endswith("-0.png") for f in call.files)
            if is_result and not killed and program.is_running():
                await program.kill()  # reaped before the answer is written: it never arrives
                killed.append(call.path)
            return response

        fake.rest.routes[index] = (verb, pattern, template, killing)
    return killed


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "path",
    [
        "interaction",
        "channel",
    ],
)
async def test_a_kill_right_after_the_result_is_posted_does_not_post_it_twice(
    fake: FakeDiscord, make_program: Callable[..., Program], path: str
) -> None:
    program = make_program(fake)
    await program.start()
    alice = fake.user("alice")
    if path == "interaction":
        killed = kill_when_posted(fake, program, "PATCH", "/messages/(?P<message>@original|\\d+)")
    else:
        killed = kill_when_posted(fake, program, "POST", "/channels/(?P<channel>\\d+)/messages")
    handle = await imagine(fake, alice, f"a fox posted once via the {path}")
    await fake.wait_for_call(lambda c: c.path.startswith(f"/api/v10/interactions/{handle.id}/"))
    if path == "channel":
        fake.expire_token(handle.token)
    await wait_until(lambda: killed, 60)
    await program.start()
    row, _ = await delivered(program, fake, handle)
    assert await program.terminate() == 0

    shown = [
        m
        for m in fake.rest.messages.values()
        if f"a fox posted once via the {path}" in m.content and not m.is_deleted
    ]
    assert row["state"] == "done" and row["attempts"] == 1
    assert len(shown) == 1, [(m.id, m.content[:60]) for m in shown]
    assert audit_discord(program, fake)["problems"] == []
