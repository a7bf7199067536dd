"""Requests made from other jobs and images: re-roll, variation, 2× upscale.

A derived request carries its source's settings (prompt, size, steps, guidance, scheduler,
model), read from the store off the loop, so admission decides from memory like any other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.errors import InvalidRequest, NotFound, TooLarge
from engine.library import Library
from engine.models import ModelRegistry
from engine.offload import Offload
from engine.request import GenerationRequest, Kind
from engine.store import ImageRecord


class Derivations:
    """Fill derived requests in from their stored source."""

    def __init__(self, library: Library, registry: ModelRegistry, offload: Offload) -> None:
        self.library = library
        self.registry = registry
        self.offload = offload

    async def source(self, image_id: str) -> ImageRecord:
        """Return a stored image; raise NotFound."""
        record = await self.offload.run(self.library.image, image_id)
        if record is None:
            raise NotFound("image", image_id)
        return record

    async def derive(self, request: GenerationRequest, limits: Any) -> GenerationRequest:
        """Return a variation or upscale request with its source's settings filled in."""
        if not request.source_image_id:
            raise InvalidRequest("source_image_id", f"required for a {request.kind}")
        source = await self.source(request.source_image_id)
        width, height = source.width, source.height
        if request.kind == Kind.UPSCALE:
            width, height = upscale_size(source.width, source.height, limits)
        same_model = source.model if source.model in self.registry.names() else None
        return dataclasses.replace(
            request,
            prompt=request.prompt or source.prompt,
            negative_prompt=request.negative_prompt or source.negative_prompt,
            width=width,
            height=height,
            steps=request.steps or source.steps,
            guidance=source.guidance if request.guidance is None else request.guidance,
            scheduler=request.scheduler or source.scheduler,
            seed=source.seed
            if request.kind == Kind.UPSCALE and request.seed is None
            else request.seed,
            model=request.model or same_model,
        )


def upscale_size(width: int, height: int, limits: Any) -> tuple[int, int]:
    """Return 2× the size, shrunk to fit max_size_px and max_pixels (multiples of 8)."""
    scale = 2.0
    scale = min(scale, limits.max_size_px / max(width, height))
    scale = min(scale, (limits.max_pixels / (width * height)) ** 0.5)
    new_width, new_height = int(width * scale) // 8 * 8, int(height * scale) // 8 * 8
    if new_width <= width or new_height <= height:
        raise TooLarge(
            "source_image_id",
            f"already at the largest size allowed ({limits.max_size_px} px, "
            f"{limits.max_pixels} pixels)",
        )
    return new_width, new_height
