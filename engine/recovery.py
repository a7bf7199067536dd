"""After the front restarts: jobs that were running on remote workers when it stopped.

Each such job's task is looked for, in this order: its result still in Redis (collected and
saved: the job ends done, nothing runs again); still running on a live box (followed to its
end); neither (left to the normal restart path: re-queued with attempt + 1, bounded). So no
job runs to completion twice, and none is lost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from engine.errors import GenerationFailed, Interrupted
from engine.jobs import Job, JobTable
from engine.offload import Offload
from engine.store import JobRecord, JobState, Store

if TYPE_CHECKING:
    from engine.remote import CeleryPool
    from engine.runs import BatchRunner
    from engine.scheduler import Scheduler

log = logging.getLogger(__name__)


async def recover(
    pool: CeleryPool,
    store: Store,
    offload: Offload,
    table: JobTable,
    scheduler: Scheduler,
    runner: BatchRunner,
) -> None:
    """Collect, follow, or leave for re-queueing every remote job that was running."""
    records = await offload.run(store.jobs_in_state, JobState.RUNNING)
    tasks: dict[str, list[JobRecord]] = defaultdict(list)
    for record in records:
        if record.task_id and record.worker and "/" in record.worker:
            tasks[record.task_id].append(record)
    for task_id, group in tasks.items():
        jobs = [Job.from_record(record) for record in group]
        worker = pool.running_on(task_id)
        try:
            result = await pool.collect(task_id, len(jobs))
        except GenerationFailed as error:  # it ended with a failure: say so, never rerun
            table.adopt(jobs, group[0].worker or "")
            for job in jobs:
                runner.ends.fail(job, error.reason, error.kind)
            continue
        except Interrupted:  # someone stopped it before the restart: it stays stopped
            table.adopt(jobs, group[0].worker or "")
            for job in jobs:
                runner.ends.cancel(job, "a cancel before the restart")
            continue
        if result is not None:
            log.info("collected task %s from before the restart", task_id)
            table.adopt(jobs, group[0].worker or "")
            runner.save(jobs, result)
        elif worker is not None:
            log.info("following task %s on %s from before the restart", task_id, worker.name)
            table.adopt(jobs, worker.name)
            scheduler.attach(worker, jobs, runner.resume(worker, jobs, task_id))
