"""Requests made from other jobs and images: re-roll, variation, 2× upscale, img2img, inpaint
(vary region) and outpaint (zoom out, pan).

A derived request carries its source's settings (prompt, size, steps, guidance, scheduler,
model), read from the store off the loop, so admission decides from memory like any other.
Uploads are cleaned here as well as at the edge (a frontend that forgot cannot store EXIF), and
every input image is fixed now, at the generation size: the job stores it and a rerun after a
restart reads it back, never the source image (which may be deleted meanwhile) or a CDN.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from PIL import Image

from engine import canvas, uploads
from engine import loras as loras_mod
from engine.errors import InvalidRequest, NotFound, TooLarge
from engine.library import Library
from engine.models import ModelRegistry
from engine.offload import Offload
from engine.request import GenerationRequest, Kind
from engine.store import ImageRecord

INPUT_KINDS = (Kind.IMG2IMG, Kind.INPAINT, Kind.OUTPAINT)
MASK_KINDS = (Kind.INPAINT, Kind.OUTPAINT)
CHAIN_MAX = 20


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
        """Return the request with its source's settings and its input images filled in."""
        if request.kind == Kind.IMG2IMG and not request.source_image_id:
            return await self.offload.run(from_upload, request, limits)
        if not request.source_image_id:
            raise InvalidRequest("source_image_id", f"required for a {request.kind}")
        source = await self.source(request.source_image_id)
        request = dataclasses.replace(request, model=self._model_for(request, source))
        width, height = source.width, source.height
        if request.kind == Kind.UPSCALE:
            width, height = upscale_size(source.width, source.height, limits)
        elif request.kind in INPUT_KINDS:
            request = await self.offload.run(self._with_inputs, request, source, limits)
            width, height = int(request.width or 0), int(request.height or 0)
        return dataclasses.replace(
            request,
            prompt=request.prompt or source.prompt,
            negative_prompt=request.negative_prompt or source.negative_prompt,
            width=width,
            height=height,
            steps=request.steps or source.steps,
            guidance=source.guidance if request.guidance is None else request.guidance,
            scheduler=request.scheduler or source.scheduler,
            loras=request.loras or _source_loras(request, source),
            seed=source.seed
            if request.kind == Kind.UPSCALE and request.seed is None
            else request.seed,
        )

    def _model_for(self, request: GenerationRequest, source: ImageRecord) -> str | None:
        if request.kind in MASK_KINDS:
            inpaint = self.registry.inpaint_model()
            if inpaint is None:
                raise InvalidRequest("kind", canvas.outpaint_note(None))
            return inpaint.name
        if request.model:
            return request.model
        spec = next((s for s in self.registry.specs() if s.name == source.model), None)
        return source.model if spec is not None and spec.kind != "inpaint" else None

    def _with_inputs(
        self, request: GenerationRequest, source: ImageRecord, limits: Any
    ) -> GenerationRequest:
        """Read the source (I/O thread) and build the job's init image and mask from it."""
        path = self.library.file_path(source)
        try:
            png = path.read_bytes() if path is not None else b""
        except OSError:
            png = b""
        if not png:
            raise NotFound("image", source.id)
        size = (source.width, source.height)
        if request.kind == Kind.IMG2IMG:
            return dataclasses.replace(
                request,
                init_png=png,
                width=size[0],
                height=size[1],
                strength=_strength(request),
            )
        if request.kind == Kind.INPAINT:
            if request.mask_png is None:
                raise InvalidRequest("mask", "required: paint the area to change")
            mask = uploads.clean_mask(
                request.mask_png, size=size, max_bytes=limits.max_upload_bytes
            )
            return dataclasses.replace(
                request, init_png=png, mask_png=mask, width=size[0], height=size[1]
            )
        move = request.outpaint or ""
        if move not in canvas.MOVES:
            raise InvalidRequest("outpaint", f"expected one of {', '.join(canvas.MOVES)}")
        new_w, new_h, _, _ = canvas.canvas_size(*size, move)
        if max(new_w, new_h) > limits.max_size_px or new_w * new_h > limits.max_pixels:
            raise TooLarge(
                "outpaint",
                f"{move} makes {new_w}×{new_h} from {size[0]}×{size[1]}; at most "
                f"{limits.max_size_px} px a side and {limits.max_pixels} pixels are allowed",
            )
        made = canvas.outpaint_canvas(png, move)
        return dataclasses.replace(
            request, init_png=made.image_png, mask_png=made.mask_png, width=new_w, height=new_h
        )

    async def chain(self, image_id: str) -> list[ImageRecord]:
        """Return an image's ancestry, oldest first, ending with the image (≤ CHAIN_MAX)."""
        return await self.offload.run(self._chain, image_id)

    def _chain(self, image_id: str) -> list[ImageRecord]:
        record = self.library.image(image_id)
        if record is None:
            raise NotFound("image", image_id)
        chain = [record]
        while chain[-1].parent_image_id and len(chain) < CHAIN_MAX:
            parent = self.library.image(chain[-1].parent_image_id)
            if parent is None or any(seen.id == parent.id for seen in chain):
                break
            chain.append(parent)
        return chain[::-1]


def from_upload(request: GenerationRequest, limits: Any) -> GenerationRequest:
    """img2img from an uploaded image: cleaned, sized to its aspect within the limits."""
    if request.init_png is None:
        raise InvalidRequest("image", "required for img2img: attach an image")
    clean = uploads.clean_image(request.init_png, max_bytes=limits.max_upload_bytes)
    width, height = request.width, request.height
    if width is None or height is None:
        width, height = uploads.fit_size(
            clean.width,
            clean.height,
            min_side=limits.min_size_px,
            max_side=limits.max_size_px,
            max_pixels=limits.max_pixels,
        )
    return dataclasses.replace(
        request,
        init_png=_resized(clean.png, width, height),
        width=width,
        height=height,
        strength=_strength(request),
    )


def _strength(request: GenerationRequest) -> float:
    value = 0.6 if request.strength is None else request.strength
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.05 <= value <= 1:
        raise InvalidRequest("strength", f"expected 0.05–1.0, got {value!r}")
    return float(value)


def _resized(png: bytes, width: int, height: int) -> bytes:
    """Store the init image at the generation size (the pipeline would resize it anyway)."""
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _source_loras(
    request: GenerationRequest, source: ImageRecord
) -> tuple[tuple[str, float | None], ...]:
    """A variation or upscale keeps its source's LoRAs; the inpainting model takes none of them."""
    if request.kind in MASK_KINDS:
        return ()
    return loras_mod.from_text(source.loras)


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
