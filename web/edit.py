"""An image's edit page: vary a painted region (inpaint), zoom out and pan (outpaint)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request

from engine import EngineError, GenerationRequest, ImageRecord, InvalidRequest, Kind
from web.context import ctx
from web.errors import answer_for
from web.fields import OUTPAINTS
from web.images import visible_image
from web.security import idempotency_key, new_nonce
from web.uploads import read_upload

bp = Blueprint("edit", __name__)

ACTIONS = ("vary", *OUTPAINTS)
# Where a refusal is shown: beside the prompt, the mask, the zoom and pan buttons, or on top.
_FIELD_PLACES = {
    "prompt": "prompt",
    "negative_prompt": "prompt",
    "mask": "mask",
    "outpaint": "outpaint",
    "width": "outpaint",
    "height": "outpaint",
}


def _page(image: ImageRecord, values: dict[str, str], errors: dict[str, str], status: int) -> Any:
    editing = ctx().editing()
    html = render_template(
        "edit.html",
        image=image,
        values=values,
        errors=errors,
        nonce=new_nonce(),
        is_available=editing.is_available,
        note=editing.note,
    )
    return html, status


@bp.get("/images/<image_id>/edit")
def page(image_id: str) -> Any:
    """Show the image under a mask editor, with its prompt and the zoom and pan buttons."""
    ctx().access.require_generate()
    image = visible_image(image_id)
    return _page(image, {"prompt": image.prompt}, {}, 200)


@bp.post("/images/<image_id>/edit")
def submit(image_id: str) -> Any:
    """Queue an inpaint of the painted region, or a zoom out or pan; go to the job's page."""
    context = ctx()
    context.access.require_generate()
    image = visible_image(image_id)
    values = {"prompt": request.form.get("prompt", "")}
    requester = context.access.requester()
    try:
        job_request = edit_request(image, request.form.get("action", ""), values["prompt"])
        job = context.bridge.submit(
            job_request, requester, {"web": "edit"}, idempotency_key(request.form, requester)
        )
    except InvalidRequest as error:
        place = _FIELD_PLACES.get(error.field, "form")
        return _page(image, values, {place: answer_for(error).message}, answer_for(error).status)
    except EngineError as error:
        answer = answer_for(error)
        return _page(image, values, {"form": answer.message}, answer.status)
    return redirect(f"/jobs/{job.id}", 303)


def edit_request(image: ImageRecord, action: str, prompt: str) -> GenerationRequest:
    """Return the request a button of the edit form asks for (the engine checks the rest)."""
    if action == "vary":
        mask = read_upload(request.files, "mask")
        if not mask:
            raise InvalidRequest("mask", "paint the region to vary on the image first")
        return GenerationRequest(prompt, kind=Kind.INPAINT, source_image_id=image.id, mask_png=mask)
    if action in OUTPAINTS:
        return GenerationRequest(
            prompt, kind=Kind.OUTPAINT, source_image_id=image.id, outpaint=action
        )
    raise InvalidRequest("action", f"expected one of {', '.join(ACTIONS)}")
