"""The fair queue on its own: weighted round-robin between requesters, FIFO within one."""

from __future__ import annotations

from dataclasses import dataclass

from engine.queue import FairQueue


@dataclass
class Item:
    id: str
    seq: int
    requester_key: str
    weight: int = 1


def _queue(
    names: str, weights: dict[str, int] | None = None
) -> tuple[FairQueue[Item], dict[str, Item]]:
    queue: FairQueue[Item] = FairQueue()
    items = {}
    for seq, name in enumerate(names.split()):
        item = Item(name, seq, name[0], (weights or {}).get(name[0], 1))
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


def test_a_weight_2_requester_gets_two_turns_per_round() -> None:
    names = " ".join([*(f"a{n}" for n in range(6)), *(f"b{n}" for n in range(6))])
    queue, _ = _queue(names, {"a": 2})
    ran = _serve_one_at_a_time(queue)
    assert ran[:9] == ["a0", "b0", "a1", "a2", "b1", "a3", "a4", "b2", "a5"]
    assert ran[9:] == ["b3", "b4", "b5"]


def test_a_weight_1_first_job_waits_at_most_the_others_weights() -> None:
    """The stated bound: however much the heavy requesters queued, a light one's first job
    starts after at most the sum of their weights of their jobs."""
    heavy = " ".join(f"{who}{n}" for who in "ab" for n in range(20))
    queue, _ = _queue(heavy, {"a": 3, "b": 2})
    first = queue.order()[0]
    queue.take([first])
    queue.done(first)
    queue.push(Item("c0", 100, "c"))
    ran = _serve_one_at_a_time(queue)
    assert ran.index("c0") <= 3 + 2


def test_a_requeued_job_goes_back_before_its_requesters_later_jobs() -> None:
    queue, items = _queue("a1 a2 a3 b1")
    queue.take([items["a1"]])
    queue.done(items["a1"])  # its worker went away: back in line
    queue.push(items["a1"])
    order = [j.id for j in queue.order()]
    assert order.index("a1") < order.index("a2") < order.index("a3")
