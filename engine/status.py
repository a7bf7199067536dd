"""What /status, /healthz and /metrics report: the engine, each worker and each model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.canvas import outpaint_note


@dataclass(frozen=True)
class WorkerStatus:
    """One worker: where it runs, what it serves and holds, whether it is busy."""

    name: str
    kind: str
    device: str
    dtype: str
    models: tuple[str, ...]
    resident: tuple[str, ...]
    is_busy: bool
    is_alive: bool
    jobs_done: int
    max_batch: int
    problems: tuple[str, ...] = ()
    last_seen_s: float | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One registry model: its name and label, kind, native size and who serves it."""

    name: str
    label: str
    kind: str
    native_px: int
    is_default: bool
    is_demo: bool
    is_noise: bool
    workers: tuple[str, ...]


@dataclass(frozen=True)
class StyleStatus:
    """One style on offer: its name, the label people see, and what it adds to a prompt."""

    name: str
    label: str
    prompt: str
    negative_prompt: str


@dataclass(frozen=True)
class LoraStatus:
    """One LoRA on offer: its name, the label people see, its default weight, its models."""

    name: str
    label: str
    weight: float
    models: tuple[str, ...]  # empty: every model


@dataclass(frozen=True)
class EngineStatus:
    """The engine as a whole; `model`, `device` and `native_px` describe the default model."""

    model: str
    device: str
    dtype: str
    native_px: int
    is_ready: bool
    is_accepting: bool
    is_demo: bool
    is_builtin_noise: bool
    queue_length: int
    running_job_ids: tuple[str, ...]
    seconds_per_step: float | None
    images_made: int
    failures: dict[str, int]
    degraded: tuple[str, ...]
    workers: tuple[WorkerStatus, ...] = ()
    models: tuple[ModelStatus, ...] = ()
    inpaint_model: str | None = None
    outpaint_note: str = ""
    styles: tuple[StyleStatus, ...] = ()
    loras: tuple[LoraStatus, ...] = ()


def report(engine: Any, is_ready: bool, is_accepting: bool) -> EngineStatus:
    """Return the status of an engine's parts (registry, workers, queue, counters)."""
    registry, counters = engine.registry, engine.counters
    infos = [worker.info() for worker in engine.workers]
    default = registry.facts(registry.default_name)
    per_unit = engine.estimates.seconds_per_unit()
    per_step = per_unit * default.native_px**2 if per_unit is not None and is_ready else None
    problems = [problem for info in infos for problem in info.problems]
    pool = getattr(engine, "pool", None)
    if pool is not None and pool.problem:
        problems.append(f"remote workers: broker unreachable ({pool.problem})")
    first = infos[0] if infos else None
    inpaint = registry.inpaint_model()
    return EngineStatus(
        model=registry.default_name,
        device=first.device if first else "",
        dtype=first.dtype if first else "",
        native_px=default.native_px if is_ready else 0,
        is_ready=is_ready,
        is_accepting=is_accepting,
        is_demo=default.is_demo,
        is_builtin_noise=default.is_noise,
        queue_length=engine.table.waiting_count(),
        running_job_ids=tuple(job.id for job in engine.table.running()),
        seconds_per_step=per_step,
        images_made=counters.images_made,
        failures=dict(counters.failures),
        degraded=(*counters.degraded.values(), *problems),
        workers=tuple(_worker(info, engine.scheduler.is_busy(info.name)) for info in infos),
        models=tuple(_model(registry, spec, infos) for spec in registry.specs()),
        inpaint_model=inpaint.name if inpaint is not None else None,
        outpaint_note=outpaint_note(inpaint.name if inpaint is not None else None),
        styles=tuple(
            StyleStatus(name, style.label or name, style.prompt, style.negative_prompt)
            for name, style in engine.settings.styles.items()
        ),
        loras=tuple(
            LoraStatus(name, lora.label or name, lora.weight, lora.models)
            for name, lora in engine.settings.loras.items()
        ),
    )


def _worker(info: Any, is_busy: bool) -> WorkerStatus:
    return WorkerStatus(
        name=info.name,
        kind=info.kind,
        device=info.device,
        dtype=info.dtype,
        models=info.models,
        resident=info.resident,
        is_busy=is_busy or not info.is_free,
        is_alive=info.is_alive,
        jobs_done=info.jobs_done,
        max_batch=info.max_batch,
        problems=info.problems,
        last_seen_s=info.last_seen_s,
    )


def _model(registry: Any, spec: Any, infos: list[Any]) -> ModelStatus:
    facts = registry.facts(spec.name)
    return ModelStatus(
        name=spec.name,
        label=spec.display,
        kind=facts.kind,
        native_px=facts.native_px,
        is_default=spec.name == registry.default_name,
        is_demo=facts.is_demo,
        is_noise=facts.is_noise,
        workers=tuple(info.name for info in infos if info.can_serve(spec.name)),
    )
