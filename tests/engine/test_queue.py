"""The fair queue on its own: round-robin between requesters, FIFO within one."""

from __future__ import annotations

from dataclasses import dataclass

from engine.queue import FairQueue


@dataclass
class Item:
    id: str
    seq: int
    requester_key: str


def _queue(names: str) -> tuple[FairQueue[Item], dict[str, Item]]:
    queue: FairQueue[Item] = FairQueue()
    items = {}
    for seq, name in enumerate(names.split()):
        item = Item(name, seq, name[0])
        queue.push(item)
        items[name] = item
    return queue, items


def _serve_one_at_a_time(queue: FairQueue[Item]) -> list[str]:
    ran = []
    while len(queue):
        job = queue.order()[0]
        queue.take([job])
        queue.done(job)  # one worker: each job ends before the next starts
        ran.append(job.id)
    return ran


def test_each_requester_is_served_once_before_anyone_twice_with_one_worker() -> None:
    queue, _ = _queue("a1 a2 a3 b1 b2 c1 c2")
    assert _serve_one_at_a_time(queue) == ["a1", "b1", "c1", "a2", "b2", "c2", "a3"]


def test_a_newcomer_runs_next_even_after_the_others_first_jobs_ended() -> None:
    queue, _ = _queue("a1 a2 a3 a4")
    first = queue.order()[0]
    queue.take([first])
    queue.done(first)
    queue.push(Item("b1", 10, "b"))
    assert [j.id for j in queue.order()][:2] == ["b1", "a2"]


def test_running_jobs_count_against_their_requester() -> None:
    queue, items = _queue("a1 a2 b1")
    queue.take([items["a1"]])
    assert [j.id for j in queue.order()] == ["b1", "a2"]
    assert queue.position("a2") == 2 and queue.count_of("a") == 2
