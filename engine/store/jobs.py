"""Job rows: insert (idempotent), start, finish with images, requeue after a crash, delivery."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.store.database import Database
from engine.store.images import insert_image
from engine.store.records import FINAL_STATES, ImageRecord, JobRecord, JobState


class JobRows:
    """The `jobs` table (mixed into Store)."""

    db: Database

    def insert_job(
        self,
        job_id: str,
        requester_key: str,
        requester: dict[str, Any],
        request: dict[str, Any],
        origin: dict[str, Any],
        idempotency_key: str | None,
        created_at: float,
        inputs: tuple[bytes | None, bytes | None] = (None, None),
    ) -> JobRecord:
        """Persist a queued job (with its input images, in the same transaction); return the
        existing job when the idempotency key was seen."""

        def insert(conn: sqlite3.Connection) -> JobRecord:
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return job_of(row)
            conn.execute(
                "INSERT INTO jobs (id, state, requester_key, requester, request, origin,"
                " idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    JobState.QUEUED,
                    requester_key,
                    json.dumps(requester),
                    json.dumps(request),
                    json.dumps(origin),
                    idempotency_key,
                    created_at,
                ),
            )
            if inputs != (None, None):
                conn.execute(
                    "INSERT INTO job_inputs (job_id, init_png, mask_png) VALUES (?, ?, ?)",
                    (job_id, *inputs),
                )
            return job_of(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

        return self.db.transaction(insert)

    def job_inputs(self, job_id: str) -> tuple[bytes | None, bytes | None]:
        """Return a job's stored (init image, mask); (None, None) when it has none."""
        row = (
            self.db.connection()
            .execute("SELECT init_png, mask_png FROM job_inputs WHERE job_id = ?", (job_id,))
            .fetchone()
        )
        return (row[0], row[1]) if row else (None, None)

    def job(self, job_id: str) -> JobRecord | None:
        """Return one job, or None."""
        row = self.db.connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_of(row) if row else None

    def job_by_key(self, idempotency_key: str) -> JobRecord | None:
        """Return the job submitted with this idempotency key, or None."""
        row = (
            self.db.connection()
            .execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
            .fetchone()
        )
        return job_of(row) if row else None

    def jobs_in_state(self, *states: str) -> list[JobRecord]:
        """Return jobs in the given states, oldest first."""
        marks = ",".join("?" * len(states))
        rows = self.db.connection().execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", states
        )
        return [job_of(row) for row in rows]

    def recent_jobs(self, requester_key: str | None = None, limit: int = 20) -> list[JobRecord]:
        """Return the newest jobs, of one requester or of everyone."""
        conn = self.db.connection()
        if requester_key is None:
            rows = conn.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE requester_key = ? ORDER BY seq DESC LIMIT ?",
                (requester_key, limit),
            )
        return [job_of(row) for row in rows]

    def mark_started(
        self,
        job_ids: Sequence[str],
        at: float,
        worker: str | None = None,
        task_id: str | None = None,
    ) -> None:
        """Mark jobs running on a worker (as a task) and count the attempt (before GPU work)."""

        def start(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE jobs SET state = 'running', started_at = ?, worker = ?, task_id = ?,"
                " attempts = attempts + 1 WHERE id = ? AND state IN ('queued', 'running')",
                [(at, worker, task_id, job_id) for job_id in job_ids],
            )

        self.db.transaction(start)

    def finish_job(
        self,
        job_id: str,
        state: str,
        at: float,
        error: str | None = None,
        seconds: float | None = None,
        images: Sequence[ImageRecord] = (),
    ) -> None:
        """Record a job's end and its images in one transaction (idempotent for reruns)."""
        assert state in FINAL_STATES

        def finish(conn: sqlite3.Connection) -> None:
            for image in images:
                insert_image(conn, image)
            conn.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = ?, seconds = ? WHERE id = ?",
                (state, at, error, seconds, job_id),
            )

        self.db.transaction(finish)

    def requeue_job(self, job_id: str) -> None:
        """Put a job that was interrupted (its worker died) back in the queue."""

        def requeue(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET state = 'queued', worker = NULL, task_id = NULL"
                " WHERE id = ? AND state = 'running'",
                (job_id,),
            )

        self.db.transaction(requeue)

    def requeue_interrupted(self, max_attempts: int, at: float) -> tuple[list[str], list[str]]:
        """After a crash: requeue running jobs with attempts left, fail the rest.

        Return (requeued ids, failed ids).
        """

        def requeue(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
            rows = conn.execute(
                "SELECT id, attempts FROM jobs WHERE state = 'running' ORDER BY seq"
            ).fetchall()
            requeued, failed = [], []
            for row in rows:
                if row["attempts"] >= max_attempts:
                    conn.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (at, f"interrupted {row['attempts']} times; gave up", row["id"]),
                    )
                    failed.append(row["id"])
                else:
                    conn.execute(
                        "UPDATE jobs SET state = 'queued', worker = NULL WHERE id = ?",
                        (row["id"],),
                    )
                    requeued.append(row["id"])
            return requeued, failed

        return self.db.transaction(requeue)

    def images_requested_since(self, requester_key: str, since: float) -> list[tuple[float, int]]:
        """Return (created_at, count) of a requester's accepted, not failed jobs since a time."""
        rows = self.db.connection().execute(
            "SELECT created_at, request FROM jobs WHERE requester_key = ? AND created_at >= ?"
            " AND state NOT IN ('failed', 'cancelled') ORDER BY created_at",
            (requester_key, since),
        )
        return [(row["created_at"], _count(row["request"])) for row in rows]

    def images_requested_by_everyone_since(
        self, since: float
    ) -> dict[str, list[tuple[float, int]]]:
        """Return every requester's (created_at, count) since a time (loaded once at start)."""
        rows = self.db.connection().execute(
            "SELECT requester_key, created_at, request FROM jobs WHERE created_at >= ?"
            " AND state NOT IN ('failed', 'cancelled') ORDER BY created_at",
            (since,),
        )
        used: dict[str, list[tuple[float, int]]] = {}
        for row in rows:
            used.setdefault(row["requester_key"], []).append(
                (row["created_at"], _count(row["request"]))
            )
        return used

    def last_submit_at(self) -> dict[str, float]:
        """Return each requester's newest job time (cooldowns survive a restart)."""
        rows = self.db.connection().execute(
            "SELECT requester_key, MAX(created_at) AS at FROM jobs GROUP BY requester_key"
        )
        return {row["requester_key"]: row["at"] for row in rows}

    def mark_delivered(self, job_id: str, delivery: dict[str, Any], at: float) -> bool:
        """Record that a frontend delivered a job; False when it was already delivered."""

        def mark(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET delivered_at = ?, delivery = ? WHERE id = ?"
                " AND delivered_at IS NULL",
                (at, json.dumps(delivery), job_id),
            )
            return cursor.rowcount == 1

        return self.db.transaction(mark)

    def update_delivery(self, job_id: str, delivery: dict[str, Any]) -> None:
        """Replace a job's delivery notes (message ids, attempts) without marking it delivered."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET delivery = ? WHERE id = ?", (json.dumps(delivery), job_id)
            )

        self.db.transaction(update)

    def undelivered(self, source: str) -> list[JobRecord]:
        """Return finished jobs one frontend made (its key in the origin) not delivered yet.

        By origin, not by requester: a person signed in to the gallery with Discord is a
        `discord:` requester, but the web has nothing to deliver to Discord for them.
        """
        rows = self.db.connection().execute(
            "SELECT * FROM jobs WHERE delivered_at IS NULL"
            " AND state IN ('done', 'failed', 'cancelled')"
            " AND requester_key LIKE ? AND json_type(origin, '$.' || ?) = 'object'"
            " ORDER BY seq",
            (source + ":%", source),
        )
        return [job_of(row) for row in rows]


def _count(request_json: str) -> int:
    return int(json.loads(request_json).get("count") or 1)


def job_of(row: sqlite3.Row) -> JobRecord:
    """Return the record of one `jobs` row."""
    return JobRecord(
        id=row["id"],
        seq=row["seq"],
        state=JobState(row["state"]),
        requester_key=row["requester_key"],
        requester=json.loads(row["requester"]),
        request=json.loads(row["request"]),
        origin=json.loads(row["origin"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        error=row["error"],
        seconds=row["seconds"],
        delivered_at=row["delivered_at"],
        delivery=json.loads(row["delivery"]),
        idempotency_key=row["idempotency_key"],
        worker=row["worker"],
        task_id=row["task_id"],
    )
