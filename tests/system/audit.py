"""Check a stopped program's data folder: every job ended once, with exactly its images."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord import FakeDiscord
from tests.system.harness import Program

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


@dataclass
class Verdict:
    """What the audit found; `problems` is empty when nothing is lost or doubled."""

    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    images: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.jobs} jobs {dict(self.states)}, {self.images} images"


def audit_store(program: Program, allow_active: bool = False) -> Verdict:
    """Check jobs, image rows, image files, temp files and SQLite integrity."""
    verdict = Verdict()
    jobs = program.job_rows()
    images = program.image_rows()
    verdict.jobs, verdict.images = len(jobs), len(images)
    verdict.states = Counter(job["state"] for job in jobs)
    by_job: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        by_job.setdefault(image["job_id"], []).append(image)
    for job in jobs:
        _check_job(job, by_job.get(job["id"], []), verdict, allow_active)
    _check_files(program, images, verdict)
    if (verdict_text := program.integrity()) != "ok":
        verdict.problems.append(f"integrity_check: {verdict_text}")
    return verdict


def _check_job(
    job: dict[str, Any], images: list[dict[str, Any]], verdict: Verdict, allow_active: bool
) -> None:
    name, state = job["id"], job["state"]
    if state in ("queued", "running") and not allow_active:
        verdict.problems.append(f"job {name} never ended: {state}")
    if state == "failed" and not (job["error"] or "").strip():
        verdict.problems.append(f"job {name} failed without a reason")
    live = [image for image in images if not image["is_deleted"]]
    if state != "done":
        if live:
            verdict.problems.append(f"job {name} is {state} but has {len(live)} images")
        return
    count = int(json.loads(job["request"]).get("count") or 1)
    indexes = sorted(image["idx"] for image in images)
    if indexes != list(range(count)):
        verdict.problems.append(f"job {name}: image indexes {indexes}, expected {count}")


def _check_files(program: Program, images: list[dict[str, Any]], verdict: Verdict) -> None:
    on_disk = {path.name for path in program.images_dir.iterdir()}
    temps = sorted(name for name in on_disk if name.startswith(".") or name.endswith(".tmp"))
    if temps:
        verdict.problems.append(f"temp files left: {temps}")
    expected = {image["file_name"] for image in images if not image["is_deleted"]}
    if missing := sorted(expected - on_disk):
        verdict.problems.append(f"image rows without files: {missing}")
    if orphans := sorted(on_disk - expected - set(temps)):
        verdict.problems.append(f"image files without rows: {orphans}")
    for name in sorted(expected & on_disk):
        data = (program.images_dir / name).read_bytes()
        if not (data.startswith(PNG_MAGIC) and data.endswith(PNG_END)):
            verdict.problems.append(f"{name}: not a whole PNG ({len(data)} bytes)")


def audit_discord(program: Program, fake: FakeDiscord) -> dict[str, Any]:
    """Check each Discord job was delivered once; return counts and problems."""
    problems: list[str] = []
    jobs = [job for job in program.job_rows() if job["requester_key"].startswith("discord:")]
    result_messages = Counter(
        attachment.filename.rsplit("-", 1)[0]
        for message in fake.rest.messages.values()
        if not message.is_deleted
        for attachment in message.attachments
        if attachment.filename.endswith("-0.png") or attachment.filename.endswith("-0.jpg")
    )
    prompts = Counter(json.loads(job["request"])["prompt"] for job in jobs)
    for job in jobs:
        name = job["id"]
        prompt = json.loads(job["request"])["prompt"]
        if prompts[prompt] == 1:
            shown = _messages_showing(fake, prompt)
            if len(shown) != 1:
                problems.append(f"discord job {name}: {len(shown)} messages show {prompt!r}")
        if job["delivered_at"] is None:
            problems.append(f"discord job {name} ({job['state']}) never delivered")
            continue
        delivery = json.loads(job["delivery"])
        message_id = int(delivery.get("message_id") or 0)
        if message_id not in fake.rest.messages:
            problems.append(f"discord job {name}: delivered in unknown message {delivery}")
        if job["state"] == "done" and result_messages[name] != 1:
            problems.append(f"discord job {name}: {result_messages[name]} result messages")
    stray = sorted(set(result_messages) - {job["id"] for job in jobs})
    if stray:
        problems.append(f"result messages for unknown jobs: {stray}")
    doubled = sum(1 for job in jobs if result_messages[job["id"]] > 1)
    doubled += sum(
        1
        for job in jobs
        if prompts[json.loads(job["request"])["prompt"]] == 1
        and len(_messages_showing(fake, json.loads(job["request"])["prompt"])) > 1
    )
    return {"jobs": len(jobs), "doubled": doubled, "problems": problems}


def _messages_showing(fake: FakeDiscord, prompt: str) -> list[int]:
    """Return the ids of live, public messages whose text names a job's prompt (in bold)."""
    needle = f"**{prompt}**"
    return [
        message.id
        for message in fake.rest.messages.values()
        if not message.is_deleted and not message.is_ephemeral and needle in message.content
    ]
