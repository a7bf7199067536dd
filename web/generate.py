"""The generate form and the job page (its live events: web/streams.py, on the loop)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue

from engine import (
    ASPECTS,
    SCHEDULERS,
    EngineError,
    ImageRecord,
    InvalidRequest,
    JobView,
    NotFound,
    Preferences,
)
from engine.demo import EXAMPLES as DEMO_EXAMPLES
from engine.demo import GRAMMAR as DEMO_GRAMMAR
from engine.uploads import size_text
from web.context import ctx
from web.errors import answer_for
from web.fields import from_form, prefill
from web.images import visible_image
from web.security import idempotency_key, new_nonce
from web.uploads import init_image

bp = Blueprint("generate", __name__)

ADVANCED = ("negative_prompt", "aspect", "width", "height", "steps", "guidance", "seed", "count")
FORM_FIELDS = ("prompt", "model", "style", *ADVANCED, "scheduler", "strength", "source_image_id")
# The engine names an upload "image"; on this form it is the init image field.
_FIELD_PLACES = {"image": "init_image", "init_image": "init_image"}
JOB_ID_CHARS = set("0123456789abcdef")


def _form(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    mine = my_defaults()
    is_open = any(name in errors for name in ADVANCED) or any(values.get(n) for n in ADVANCED)
    is_demo = ctx().model().is_demo
    source = values.get("source_image_id", "")
    html = render_template(
        "generate.html",
        values=values,
        errors=errors,
        is_advanced_open=is_open,
        nonce=new_nonce(),
        schedulers=SCHEDULERS,
        aspects=ASPECTS,
        # The demo model only draws its caption grammar: show it, and prompts it draws well.
        models=[m for m in ctx().models() if m.kind == "txt2img"],
        styles=ctx().styles(),
        demo_grammar=DEMO_GRAMMAR if is_demo else None,
        demo_examples=DEMO_EXAMPLES if is_demo else (),
        init=visible_image(source) if source else None,
        upload_limit=size_text(ctx().settings.limits.max_upload_bytes),
        mine=mine,
        mine_text=defaults_text(mine),
    )
    return html, status


def my_defaults() -> Preferences | None:
    """Return the signed-in person's own defaults (`/settings`), or None for anyone else."""
    context = ctx()
    if context.access.person() is None:
        return None
    mine = context.bridge.preferences(context.access.requester())
    return None if mine.is_default else mine


def defaults_text(mine: Preferences | None) -> str:
    """Return the form fields a person's defaults fill in, as the form's hint says them."""
    if mine is None:
        return ""
    parts = [
        f"aspect {mine.aspect}" if mine.aspect else "",
        f"steps {mine.steps}" if mine.steps is not None else "",
        f"guidance {mine.guidance:g}" if mine.guidance is not None else "",
        "a negative prompt" if mine.negative_prompt else "",
        f"model {mine.model}" if mine.model else "",
        f"style {mine.style}" if mine.style else "",
    ]
    return ", ".join(part for part in parts if part)


@bp.get("/generate")
def form() -> Any:
    """Show the form, prefilled from an image (?from=<image id>) or with an image as its init
    image (?init=<image id>) when asked."""
    context = ctx()
    context.access.require_generate()
    values: dict[str, str] = {}
    source = request.args.get("from", "")
    init = request.args.get("init", "")
    if source:
        values = prefill(visible_image(source))
    elif init:
        values = _init_values(visible_image(init))
    elif request.args.get("prompt"):
        values = {
            "prompt": request.args.get("prompt", "")[: context.settings.limits.max_prompt_chars]
        }
    return _form(values, {})


@bp.post("/generate")
def submit() -> Any:
    """Queue a job and go to its page at once; show errors beside their field."""
    context = ctx()
    context.access.require_generate()
    values = {name: request.form.get(name, "") for name in FORM_FIELDS}
    if values["source_image_id"]:
        visible_image(values["source_image_id"])  # 404 for an image this client may not see
    requester = context.access.requester()
    try:
        upload = init_image(request.files, context.settings)
        job_request = from_form(values, upload.png if upload is not None else None)
        job = context.bridge.submit(
            job_request, requester, {"web": "form"}, idempotency_key(request.form, requester)
        )
    except InvalidRequest as error:
        field = _FIELD_PLACES.get(error.field, error.field)
        place = field if field in (*FORM_FIELDS, "init_image") else "form"
        answer = answer_for(error)
        return _form(values, {place: answer.message}, answer.status)
    except EngineError as error:
        answer = answer_for(error)
        return _form(values, {answer.field or "form": answer.message}, answer.status)
    for note in upload.notes if upload is not None else ():
        flash(f"Init image: {note}.", "note")
    return redirect(f"/jobs/{job.id}", 303)


def _init_values(image: ImageRecord) -> dict[str, str]:
    return {
        "prompt": image.prompt,
        "negative_prompt": image.negative_prompt,
        "source_image_id": image.id,
    }


def job_or_404(job_id: str) -> JobView:
    """Return a job, or abort with 404 for anything that is not a known job id."""
    if not 1 <= len(job_id) <= 32 or not set(job_id) <= JOB_ID_CHARS:
        abort(404)
    try:
        return ctx().bridge.job(job_id)
    except NotFound:
        abort(404)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    """Show a job: its place in the queue, its progress, then its images."""
    context = ctx()
    job = job_or_404(job_id)
    images = [img for i in job.image_ids if (img := context.library.image(i)) is not None]
    requester = context.access.requester()
    return render_template(
        "job.html",
        job=job,
        images=images,
        may_cancel=job.state in ("queued", "running")
        and (requester.key == job.requester.key or context.access.is_moderator()),
    )


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    """Cancel one of this client's jobs (or any, for the admin)."""
    context = ctx()
    job = job_or_404(job_id)
    context.bridge.cancel(job.id, context.access.requester())
    return redirect(f"/jobs/{job.id}", 303)
