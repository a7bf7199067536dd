"""Run by test_crash.py in a subprocess: queue jobs, report when job 3 runs, wait to be killed."""

from __future__ import annotations

import asyncio
import json
import sys

import torch

from engine import Engine, GenerationRequest, Requester, Started, Store
from engine.config import from_mapping


async def main(model: str, data_dir: str, count: int) -> None:
    torch.set_num_threads(1)
    settings = from_mapping(
        {"engine": {"model": model, "data_dir": data_dir}, "limits": {"max_per_user": 100}}, {}
    )
    engine = Engine(settings, Store(data_dir))
    await engine.start()
    ids = []
    for index in range(count):
        request = GenerationRequest(f"fox {index}", steps=30, seed=index)
        ids.append((await engine.submit(request, Requester("web", "crash"))).id)
    started = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, Started) and event.job_id == ids[2]:
            started.set()

    engine.listen(on_event)
    await started.wait()
    print(json.dumps({"ids": ids}), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
