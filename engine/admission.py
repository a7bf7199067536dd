"""Admission: whether a request becomes a job. Memory only, so it never blocks the loop.

The checks run in this order, each a small function raising a typed error: ban, channel rules,
the requester's limits (with guild and role overrides) and the request's own ranges and budget,
moderation of the normalised prompt, the model (known, and some worker serves it; with remote
workers known is enough, its jobs wait for a box that serves it), capacity
(the shared queue, then the requester's share), cooldown, and the rolling daily quota.
Idempotency is checked before all of them, by the engine (an answered key is not a new job).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from engine import limits as limits_mod
from engine import request as request_mod
from engine.bans import Bans
from engine.config import LimitSettings, Settings
from engine.errors import (
    Blocked,
    InvalidRequest,
    ModelUnavailable,
    QueueFull,
    QuotaExceeded,
    RateLimited,
)
from engine.estimates import Estimates
from engine.jobs import JobTable
from engine.models import ModelRegistry
from engine.moderation import Moderator
from engine.preferences import PreferenceBook
from engine.preferences import apply as apply_preferences
from engine.request import GenerationRequest, Kind, Requester

DAY_S = 86400.0


class Ledger:
    """What each requester used lately: the last submit (cooldown) and images per job (quota)."""

    def __init__(self) -> None:
        self.last_submit: dict[str, float] = {}
        self._images: dict[str, deque[tuple[float, int, str]]] = {}
        self._owner: dict[str, str] = {}

    def load(self, last_submit: dict[str, float], used: dict[str, list[tuple[float, int]]]) -> None:
        """Take what the store remembers (at start)."""
        self.last_submit = dict(last_submit)
        for key, rows in used.items():
            self._images[key] = deque((at, count, "") for at, count in rows)

    def note(self, key: str, at: float, count: int, job_id: str) -> None:
        """Count an accepted job."""
        self.last_submit[key] = at
        self._images.setdefault(key, deque()).append((at, count, job_id))
        self._owner[job_id] = key

    def refund(self, job_id: str) -> None:
        """Give back a job's images: it failed, was cancelled or never became durable."""
        key = self._owner.pop(job_id, None)
        if key is None:
            return
        self._images[key] = deque(entry for entry in self._images[key] if entry[2] != job_id)

    def forget(self, job_id: str) -> None:
        """Stop tracking a job that ended with its images (they stay counted)."""
        self._owner.pop(job_id, None)

    def used_since(self, key: str, since: float) -> tuple[int, float | None]:
        """Return images used since a time, and when the oldest of them was asked for."""
        entries = self._images.get(key)
        if not entries:
            return 0, None
        while entries and entries[0][0] < since:
            entries.popleft()
        return sum(count for _, count, _ in entries), entries[0][0] if entries else None


class Admission:
    """Decide, from memory, whether a request may be queued; return it resolved."""

    def __init__(
        self,
        settings: Settings,
        table: JobTable,
        registry: ModelRegistry,
        bans: Bans,
        estimates: Estimates,
        serving: Callable[[str], bool],
        preferences: PreferenceBook,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.moderator = Moderator(settings.moderation)
        self.table = table
        self.registry = registry
        self.bans = bans
        self.estimates = estimates
        self.serving = serving
        self.preferences = preferences
        self.clock = clock
        self.ledger = Ledger()
        self.on_blocked: Callable[[Requester, str, Blocked], None] = lambda *_: None

    def reload(self, settings: Settings) -> None:
        """Use new limits and moderation rules."""
        self.settings = settings
        self.moderator = Moderator(settings.moderation)

    def check(self, request: GenerationRequest, requester: Requester) -> GenerationRequest:
        """Run every check in order; return the request resolved against the requester's limits."""
        self.bans.check(requester)
        self.moderator.check_channel(requester)
        limits = limits_mod.effective(self.settings.limits, requester)
        resolved = self._resolve(request, requester, limits)
        self._moderate(resolved, requester)
        self._check_capacity(requester, limits)
        self._check_cooldown(requester, limits)
        self._check_quota(requester, limits, int(resolved.count or 1))
        return resolved

    def _resolve(
        self, request: GenerationRequest, requester: Requester, limits: LimitSettings
    ) -> GenerationRequest:
        if request.kind != Kind.TXT2IMG and request.width is None:  # not filled in by derive
            upload = request.kind == Kind.IMG2IMG and not request.source_image_id
            raise InvalidRequest(
                "image" if upload else "source_image_id", f"required for a {request.kind}"
            )
        # Flags first: `--model NAME` in the prompt is checked like the model field (a prompt
        # that is no text, or too long, is refused by resolve, naming the field).
        if isinstance(request.prompt, str) and len(request.prompt) <= limits.max_prompt_chars:
            request = request_mod.apply_flags(request)
        # Then the person's own defaults, under what they typed (flags included).
        request = apply_preferences(
            request,
            self.preferences.of(requester),
            limits,
            self.text_models(),
            self.settings.styles,
        )
        spec = self.registry.get(request.model)
        _check_model_kind(request, spec.name, spec.kind)
        if not self.serving(spec.name):
            raise ModelUnavailable(spec.name, "no worker serves it now", "See /status.")
        facts = self.registry.facts(spec.name)
        named = dataclasses.replace(request, model=spec.name)
        return request_mod.resolve(
            named,
            limits,
            facts.native_px,
            self.settings.engine.default_scheduler,
            self.registry.defaults(spec.name),
            self.settings.styles,
            self.settings.loras,
        )

    def text_models(self) -> list[str]:
        """Return the text-to-image models a default may name."""
        return [spec.name for spec in self.registry.specs() if spec.kind == "txt2img"]

    def _moderate(self, request: GenerationRequest, requester: Requester) -> None:
        try:
            self.moderator.check_prompt(request.prompt, requester)
        except Blocked as blocked:
            self.on_blocked(requester, request.prompt, blocked)
            raise

    def _check_capacity(self, requester: Requester, limits: LimitSettings) -> None:
        active = len(self.table)
        if active >= limits.max_queue:
            raise QueueFull(active, limits.max_queue, retry_after_s=_at_least_1s(self._first_s()))
        mine = self.table.of(requester.key)
        if len(mine) >= limits.max_per_user:
            raise QueueFull(
                len(mine),
                limits.max_per_user,
                is_per_requester=True,
                retry_after_s=_at_least_1s(self._first_of_s(mine)),
            )

    def _first_s(self) -> float:
        """Return when a slot in the shared queue should free up."""
        running = self.table.running()
        if running:
            return min(self.estimates.remaining_s(job) for job in running)
        waiting = self.table.waiting()
        return self.estimates.seconds(waiting[0].request) if waiting else 0.0

    def _first_of_s(self, jobs: Iterable[Any]) -> float:
        """Return when the first of these jobs should end (a slot of the requester frees)."""
        jobs = list(jobs)
        running = [job for job in jobs if job.state == "running"]
        if running:
            return min(self.estimates.remaining_s(job) for job in running)
        waiting = self.table.waiting()
        starts = self.estimates.start_times(waiting, self.table.running(), 1)
        first = min(jobs, key=lambda job: job.seq, default=None)
        if first is None:
            return 0.0
        return starts.get(first.id, 0.0) + self.estimates.seconds(first.request)

    def _check_cooldown(self, requester: Requester, limits: LimitSettings) -> None:
        now = self.clock()
        last = self.ledger.last_submit.get(requester.key)
        if last is not None and limits.cooldown_s > 0 and now - last < limits.cooldown_s:
            raise RateLimited(retry_after_s=round(limits.cooldown_s - (now - last), 1))

    def _check_quota(self, requester: Requester, limits: LimitSettings, count: int) -> None:
        if limits.daily_quota <= 0:
            return
        now = self.clock()
        used, oldest = self.ledger.used_since(requester.key, now - DAY_S)
        if used + count > limits.daily_quota:
            resets = (oldest if oldest is not None else now) + DAY_S - now
            raise QuotaExceeded(used=used, limit=limits.daily_quota, resets_in_s=resets)


def _at_least_1s(seconds: float) -> float:
    return max(1.0, round(seconds, 1))


def _check_model_kind(request: GenerationRequest, name: str, model_kind: str) -> None:
    """An inpainting model only fills masks; a masked request needs an inpainting model."""
    is_masked = request.kind in (Kind.INPAINT, Kind.OUTPAINT)
    if model_kind == "inpaint" and not is_masked:
        raise InvalidRequest(
            "model", f"{name} is an inpainting model: it serves zoom out, pan and vary region"
        )
    if is_masked and model_kind != "inpaint":
        raise InvalidRequest("model", f"{name} is not an inpainting model")
