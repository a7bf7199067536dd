"""The JSON API under /api/v1/ and its OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask_wtf.csrf import CSRFProtect

from engine import ApiToken, ImageRecord, InvalidRequest, JobView
from web.context import ctx
from web.fields import from_json
from web.gallery import fetch, query_from
from web.generate import job_or_404
from web.images import image_chain, visible_image
from web.openapi import document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LIMIT = 100
MAX_LABEL_CHARS = 100
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")


@bp.before_request
def protect_session_changes() -> None:
    """Ask for the CSRF token (X-CSRFToken) on changes a signed-in person's session cookie
    authorises; a bearer token needs none (no other site can send it)."""
    access = ctx().access
    if request.method in ("GET", "HEAD", "OPTIONS") or access.person() is None:
        return
    token = access.bearer()
    if token and (access.token_matches(token) or access.token_requester() is not None):
        return
    csrf: CSRFProtect = current_app.extensions["csrf"]
    csrf.protect()


def image_json(image: ImageRecord) -> dict[str, Any]:
    """Return every setting of an image and where to fetch it."""
    return {
        "id": image.id,
        "job_id": image.job_id,
        "prompt": image.prompt,
        "negative_prompt": image.negative_prompt,
        "seed": image.seed,
        "steps": image.steps,
        "guidance": image.guidance,
        "width": image.width,
        "height": image.height,
        "scheduler": image.scheduler,
        "model": image.model,
        "model_hash": image.model_hash,
        "style": image.style,
        "loras": [{"name": name, "weight": weight} for name, weight in image.lora_weights],
        "kind": image.kind,
        "parent_image_id": image.parent_image_id,
        "source": image.source,
        "author_id": image.author_id,
        "author_name": image.author_name,
        "seconds": image.seconds,
        "created_at": image.created_at,
        "is_nsfw": image.is_nsfw_channel or image.is_flagged,
        "favourites": image.favourites,
        "message_url": image.message_url,
        "file_url": f"/files/{image.id}.png",
        "download_url": f"/images/{image.id}/download",
        "page_url": f"/images/{image.id}",
    }


def job_json(job: JobView) -> dict[str, Any]:
    """Return a job's state as the API shows it."""
    return {
        "job_id": job.id,
        "state": job.state,
        "position": job.position,
        "eta_s": job.eta_s,
        "progress": {"step": job.step, "total": job.total},
        "error": job.error,
        "image_ids": list(job.image_ids),
        "images": [f"/api/v1/images/{i}" for i in job.image_ids],
        "created_at": job.created_at,
        "seconds": job.seconds,
        "page_url": f"/jobs/{job.id}",
    }


@bp.post("/generations")
def create_generation() -> tuple[Response, int]:
    """Queue a generation from a JSON body; answer 202 with the job id at once."""
    context = ctx()
    context.access.require_generate()
    if not request.is_json:
        raise InvalidRequest("body", "expected Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise InvalidRequest("body", "expected a JSON object")
    job_request = from_json(body)
    requester = context.access.api_requester()
    key = request.headers.get("Idempotency-Key") or (
        body.get("idempotency_key") if isinstance(body, dict) else None
    )
    if key is not None and (not isinstance(key, str) or not _KEY.fullmatch(key)):
        raise InvalidRequest("idempotency_key", "expected 1–100 letters, digits or ._:-")
    scoped = f"{requester.key}:api:{key}" if key else None
    job = context.bridge.submit(job_request, requester, {"web": "api"}, scoped)
    response = jsonify(job_json(job))
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response, 202


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    """Return a job's state, position, progress, error and image ids."""
    return jsonify(job_json(job_or_404(job_id)))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    """Cancel a queued or running job: the caller's own, or any for the admin.

    A JSON body (may be `{}`) is required so that a form on another site cannot cancel jobs.
    """
    context = ctx()
    if not request.is_json:
        raise InvalidRequest("body", "expected Content-Type: application/json")
    job = job_or_404(job_id)
    view = context.bridge.cancel(job.id, context.access.api_requester())
    return jsonify(job_json(view))


@bp.get("/images")
def list_images() -> Response:
    """Return a page of images, newest first, with the cursor of the next page."""
    context = ctx()
    context.access.require_browse()
    limit_text = request.args.get("limit", "")
    limit = context.settings.web.page_size
    if limit_text:
        if not (limit_text.isascii() and limit_text.isdigit()) or not (
            1 <= int(limit_text) <= MAX_LIMIT
        ):
            raise InvalidRequest("limit", f"expected 1–{MAX_LIMIT}")
        limit = int(limit_text)
    page = fetch(query_from(request.args, context, limit), context)
    cursor = None if page.next_cursor is None else str(page.next_cursor)
    return jsonify({"images": [image_json(i) for i in page.images], "next_cursor": cursor})


@bp.get("/images/<image_id>")
def get_image(image_id: str) -> Response:
    """Return one image's settings and URLs, and its chain of ids (oldest first, itself last)."""
    image = visible_image(image_id)
    return jsonify({**image_json(image), "chain": [link.id for link in image_chain(image)]})


def token_json(token: ApiToken) -> dict[str, Any]:
    """Return a personal token's row as the API shows it (never the token)."""
    return {
        "id": token.id,
        "label": token.label,
        "created_at": token.created_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
    }


def _signed_in_key() -> str:
    """Return the signed-in person's requester key; 401 without a session (tokens cannot make
    tokens: a leaked one must not be able to outlive its revocation)."""
    context = ctx()
    person = context.access.person()
    if person is None or context.access.token_requester() is not None:
        abort(401)
    return context.access.requester().key


@bp.get("/tokens")
def list_tokens() -> Response:
    """Return the signed-in person's personal API tokens (revoked ones too)."""
    key = _signed_in_key()
    tokens = ctx().library.tokens_of(key)
    return jsonify({"tokens": [token_json(t) for t in tokens]})


@bp.post("/tokens")
def create_token() -> tuple[Response, int]:
    """Make a personal API token acting as the signed-in person; it is shown this once."""
    _signed_in_key()
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise InvalidRequest("body", "expected a JSON object")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
        raise InvalidRequest("label", f"expected text of at most {MAX_LABEL_CHARS} characters")
    context = ctx()
    token, row = context.library.create_token(context.access.requester(), label.strip())
    return jsonify({**token_json(row), "token": token}), 201


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str) -> tuple[str, int]:
    """Revoke one of the signed-in person's tokens; it stops working at once."""
    key = _signed_in_key()
    if not _TOKEN_ID.fullmatch(token_id) or not ctx().library.revoke_token(token_id, key):
        abort(404)
    return "", 204


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3.1 document of this API."""
    context = ctx()
    models = [model.name for model in context.models() if model.kind == "txt2img"]
    styles = [style.name for style in context.styles()]
    return jsonify(document(context.settings, models, context.editing().is_available, styles))
