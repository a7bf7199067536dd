"""A finished job's images: PNG files carrying the A1111 `parameters` chunk, and their records.

Runs on the engine's I/O thread. Files first (temp name, fsync, rename), then every record and
the job's end in one transaction; a failure removes the files it wrote, so no half job is ever
in the gallery. Ids are `<job id>-<index>`, so a rerun after a crash writes the same rows.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from engine import loras as loras_mod
from engine.models import ModelFacts
from engine.pngmeta import Parameters, encode_png, with_parameters
from engine.request import SEED_MAX, GenerationRequest, Requester
from engine.store import ImageRecord, JobState, Store, StoreError
from engine.worker import GeneratedImage


@dataclass(frozen=True)
class Finished:
    """What the I/O thread needs of a job to save it (immutable: built on the loop)."""

    job_id: str
    requester: Requester
    request: GenerationRequest
    model: str
    facts: ModelFacts
    seconds: float


class Results:
    """Write images and records for finished jobs."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def save(self, job: Finished, images: Sequence[GeneratedImage]) -> list[ImageRecord]:
        """Write the PNG files, then the records and the job's end; return the records."""
        records = [self._record(job, index, image) for index, image in enumerate(images)]
        written = []
        try:
            for record, image in zip(records, images, strict=True):
                data = _png(image, parameters(job, record))
                written.append(self.store.write_image_file(record.file_name, data))
            self.store.finish_job(
                job.job_id, JobState.DONE, self.clock(), seconds=job.seconds, images=records
            )
        except StoreError:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        except ValueError as error:  # a worker sent bytes that are not a PNG
            for path in written:
                path.unlink(missing_ok=True)
            raise StoreError(f"bad image from the worker: {error}") from error
        return self.store.images_of_job(job.job_id)

    def _record(self, job: Finished, index: int, image: GeneratedImage) -> ImageRecord:
        req, who = job.request, job.requester
        image_id = f"{job.job_id}-{index}"
        return ImageRecord(
            id=image_id,
            job_id=job.job_id,
            idx=index,
            seed=image.seed % (SEED_MAX + 1),
            width=image.width,
            height=image.height,
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            steps=int(req.steps or 0),
            guidance=float(req.guidance or 0),
            scheduler=str(req.scheduler),
            model=job.model,
            model_hash=job.facts.model_hash,
            style=req.style or "",
            loras=loras_mod.to_text((name, float(weight or 0)) for name, weight in req.loras),
            kind=str(req.kind),
            parent_image_id=req.source_image_id,
            source=who.source,
            author_id=who.user_id,
            author_name=who.name,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            is_nsfw_channel=who.is_nsfw_channel,
            is_flagged=bool(image.is_flagged),
            seconds=round(job.seconds, 3),
            created_at=self.clock(),
            file_name=f"{image_id}.png",
        )


def parameters(job: Finished, record: ImageRecord) -> Parameters:
    """Return what A1111's PNG Info shows for an image (its model by name, never by path)."""
    extra: list[tuple[str, str]] = []
    if record.model_hash:
        extra.append(("Model hash", record.model_hash))
    extra.append(("Job", job.job_id))
    if record.style:
        extra.append(("Style", record.style))
    if record.kind == "img2img" and job.request.strength is not None:
        extra.append(("Denoising strength", f"{job.request.strength:g}"))
    if record.kind != "txt2img":
        extra += [("Kind", record.kind), ("Source image", record.parent_image_id or "")]
    # A1111 writes LoRAs into the prompt text as `<lora:name:0.8>` tags.
    tags = loras_mod.prompt_tags(loras_mod.from_text(record.loras))
    return Parameters(
        prompt=f"{record.prompt} {tags}" if tags else record.prompt,
        negative_prompt=record.negative_prompt,
        steps=record.steps,
        sampler=record.scheduler,
        cfg_scale=record.guidance,
        seed=record.seed,
        width=record.width,
        height=record.height,
        model=record.model,
        extra=tuple(extra),
    )


def _png(image: GeneratedImage, params: Parameters) -> bytes:
    if image.format == "rgb":
        pixels = Image.frombytes("RGB", (image.width, image.height), image.data)
        return encode_png(pixels, params)
    try:
        with Image.open(io.BytesIO(image.data)) as check:  # refuse what is not a PNG that size
            is_png = check.format == "PNG" and check.size == (image.width, image.height)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"not an image: {error}") from error
    if not is_png:
        raise ValueError(f"expected a {image.width}×{image.height} PNG")
    return with_parameters(image.data, params)
