"""The OpenAPI 3.1 document of /api/v1/: what the API really accepts and answers.

Tests check it against the routes and run schemathesis on it: every schema-valid request is
accepted or refused with a documented status (a product of fields, like the work budget,
cannot be a schema, so it is a documented 422), every answer matches its schema.
"""

from __future__ import annotations

from typing import Any

from engine import ASPECTS, SCHEDULERS, SEED_MAX, Settings
from engine.request import prompt_pattern
from web.fields import OUTPAINTS

KEY_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
JOB_ID_PATTERN = r"^[0-9a-f]{1,32}$"
IMAGE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CURSOR_PATTERN = r"^[0-9]{1,18}$"
TOKEN_ID_PATTERN = r"^[0-9a-f]{16}$"

_REFUSALS = {
    "400": "Malformed: a field out of its range, an unknown field, not JSON",
    "403": "Generating is off or needs the admin token; or the requester is banned",
    "404": "No such image (a variation, upscale, img2img or outpaint of a missing image)",
    "413": "The body is larger than web.max_body_bytes",
    "422": "Well-formed but refused: the prompt is blocked by moderation, or width × height × "
    "steps × count is over the work budget (limits.max_pixel_steps), or width × height over "
    "limits.max_pixels, or an upscale of an image already at the largest size, or a zoom out "
    "or pan whose canvas would be larger than the size limits",
    "429": "Slow down: the per-client rate limit, the cooldown, the daily quota, or your share "
    "of the queue is full (error `too_many_jobs`); Retry-After says when to try again",
    "503": "The shared queue is full, or the server is restarting; Retry-After says when",
}


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry:
        response["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return response


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, pattern: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
    }


def _fields(
    settings: Settings, models: list[str], kinds: list[str], styles: list[str]
) -> dict[str, Any]:
    limits = settings.limits
    size = {
        "type": "integer",
        "minimum": limits.min_size_px,
        "maximum": limits.max_size_px,
        "multipleOf": 8,
    }
    style: dict[str, Any] = {}
    if styles:  # without styles the field is left out: any name would be refused
        style["style"] = {
            "type": "string",
            "enum": styles,
            "description": "A shared style: wraps the prompt in its template, appends its "
            "negative prompt and brings its defaults (your own values win)",
        }
    return {
        **style,
        **_lora_field(settings),
        "prompt": {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.max_prompt_chars,
            "pattern": prompt_pattern(),
            "description": "What to draw: at least one visible character. People may type "
            "inline flags (--ar 3:2 --seed 7) in the form and on Discord; over the API use the "
            "fields, so the pattern leaves `--word` out.",
        },
        "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
        "width": {**size, "description": f"Pixels; width × height ≤ {limits.max_pixels}"},
        "height": size,
        "aspect": {
            "type": "string",
            "enum": list(ASPECTS),
            "description": "A size of about the model's native area (width and height win)",
        },
        "steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps},
        "guidance": {"type": "number", "minimum": 0, "maximum": limits.max_guidance},
        "seed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
        "count": {"type": "integer", "minimum": 1, "maximum": limits.max_count},
        "scheduler": {"type": "string", "enum": list(SCHEDULERS)},
        "model": {"type": "string", "enum": models, "description": "Default: the first"},
        "kind": {
            "type": "string",
            "enum": kinds,
            "description": "outpaint (zoom out, pan) is listed only when an inpainting model "
            "serves it",
        },
        "source_image_id": {"type": "string", "pattern": IMAGE_ID_PATTERN},
        "strength": {
            "type": "number",
            "minimum": 0.05,
            "maximum": 1.0,
            "description": "img2img only: how much to change the source (default 0.6)",
        },
        "outpaint": {
            "type": "string",
            "enum": list(OUTPAINTS),
            "description": "outpaint only: zoom out 1.5× or 2×, or extend by half a side",
        },
        "idempotency_key": {
            "type": "string",
            "pattern": KEY_PATTERN,
            "description": "The same key twice queues one job (the Idempotency-Key header wins)",
        },
    }


def _lora_field(settings: Settings) -> dict[str, Any]:
    """Return the `loras` field, or nothing without LoRAs (any name would be refused)."""
    if not settings.loras:
        return {}
    names = "|".join(name.replace(".", r"\.") for name in settings.loras)  # [A-Za-z0-9._-]
    weight = r"-?(?:[01](?:\.[0-9]{1,3})?|2(?:\.0{1,3})?)"  # -2 to 2
    return {
        "loras": {
            "type": "array",
            "maxItems": settings.limits.max_loras,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": f"^(?:{names})(?::{weight})?$"},
            "description": "LoRAs as NAME or NAME:WEIGHT (weight -2 to 2, default the LoRA's "
            "own), each named once and fitting the model",
        }
    }


def _none_of(*names: str) -> dict[str, Any]:
    return {"not": {"anyOf": [{"required": [name]} for name in names]}}


def _request_schema(
    settings: Settings, models: list[str], has_inpaint: bool, styles: list[str]
) -> dict[str, Any]:
    budget = settings.limits.max_pixel_steps
    kinds = ["txt2img", "variation", "upscale", "img2img", *(["outpaint"] if has_inpaint else [])]
    shapes: list[dict[str, Any]] = [
        {
            "title": "txt2img",
            "required": ["prompt"],
            "properties": {"kind": {"const": "txt2img"}},
            **_none_of("source_image_id", "strength", "outpaint"),
        },
        {
            "title": "from a stored image",
            "required": ["kind", "source_image_id"],
            "properties": {"kind": {"enum": ["variation", "upscale"]}},
            **_none_of("strength", "outpaint"),
        },
        {
            "title": "img2img from a stored image",
            "required": ["kind", "source_image_id"],
            "properties": {"kind": {"const": "img2img"}},
            **_none_of("outpaint"),
        },
    ]
    if has_inpaint:
        shapes.append(
            {
                "title": "zoom out or pan a stored image",
                "required": ["kind", "source_image_id", "outpaint"],
                "properties": {"kind": {"const": "outpaint"}},
                **_none_of("strength"),
            }
        )
    return {
        "type": "object",
        "additionalProperties": False,
        "description": f"width × height × steps × count must stay within {budget} (else 422).",
        "properties": _fields(settings, models, kinds, styles),
        "oneOf": shapes,
    }


def _job_schema() -> dict[str, Any]:
    nullable_number = {"type": ["number", "null"]}
    return {
        "type": "object",
        "required": ["job_id", "state", "progress", "image_ids", "created_at", "page_url"],
        "properties": {
            "job_id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["queued", "running", "done", "failed", "cancelled"],
            },
            "position": {"type": ["integer", "null"]},
            "eta_s": nullable_number,
            "progress": {
                "type": "object",
                "required": ["step", "total"],
                "properties": {"step": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "error": {"type": ["string", "null"]},
            "image_ids": {"type": "array", "items": {"type": "string"}},
            "images": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "number"},
            "seconds": nullable_number,
            "page_url": {"type": "string"},
        },
    }


def _image_schema() -> dict[str, Any]:
    texts = (
        "id", "job_id", "prompt", "negative_prompt", "scheduler", "model", "model_hash", "style",
        "kind", "source", "author_id", "author_name", "file_url", "download_url", "page_url",
    )  # fmt: skip
    integers = ("seed", "steps", "width", "height", "favourites")
    return {
        "type": "object",
        "required": ["id", "prompt", "seed", "width", "height", "model", "file_url"],
        "properties": {
            **{k: {"type": "string"} for k in texts},
            **{k: {"type": "integer"} for k in integers},
            **{k: {"type": "number"} for k in ("guidance", "seconds", "created_at")},
            "parent_image_id": {"type": ["string", "null"]},
            "chain": {
                "type": "array",
                "items": {"type": "string"},
                "description": "One image only: the ids it derives from, oldest first, ending "
                "with its own",
            },
            "message_url": {"type": ["string", "null"]},
            "is_nsfw": {"type": "boolean"},
            "loras": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "weight": {"type": "number"}},
                },
            },
        },
    }


def _schemas(
    settings: Settings, models: list[str], has_inpaint: bool, styles: list[str]
) -> dict[str, Any]:
    return {
        "GenerationRequest": _request_schema(settings, models, has_inpaint, styles),
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "A code for machines"},
                "message": {"type": "string", "description": "Words for people"},
                "field": {"type": "string", "description": "The field at fault, if one is"},
            },
        },
        "Job": _job_schema(),
        "Image": _image_schema(),
        "ImagePage": {
            "type": "object",
            "required": ["images", "next_cursor"],
            "properties": {
                "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        **_token_schemas(),
    }


def _token_schemas() -> dict[str, Any]:
    moment = {"type": ["number", "null"]}
    token = {
        "type": "object",
        "required": ["id", "label", "created_at", "last_used_at", "revoked_at"],
        "properties": {
            "id": {"type": "string", "pattern": TOKEN_ID_PATTERN},
            "label": {"type": "string"},
            "created_at": {"type": "number"},
            "last_used_at": moment,
            "revoked_at": moment,
        },
    }
    new = {
        **token,
        "required": [*token["required"], "token"],
        "properties": {**token["properties"], "token": {"type": "string"}},  # type: ignore[dict-item]
    }
    listing = {
        "type": "object",
        "required": ["tokens"],
        "properties": {
            "tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}
        },
    }
    return {"Token": token, "NewToken": new, "TokenList": listing}


def _tokens() -> dict[str, Any]:
    """Personal API tokens: made and revoked by a person signed in with Discord (session
    cookie and X-CSRFToken), used as `Authorization: Bearer imt_…`."""
    unsigned = _error("Not signed in with Discord (a token cannot manage tokens)")
    return {
        "/api/v1/tokens": {
            "get": {
                "summary": "The signed-in person's personal API tokens (never the tokens).",
                "operationId": "listTokens",
                "security": [{"discordSession": []}],
                "responses": {"200": _ok("Their tokens", "TokenList"), "401": unsigned},
            },
            "post": {
                "summary": "Make a personal API token acting as the signed-in person; the token"
                " is in this answer only (stored hashed).",
                "operationId": "createToken",
                "security": [{"discordSession": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"label": {"type": "string", "maxLength": 100}},
                            }
                        }
                    },
                },
                "responses": {
                    "201": _ok("The new token", "NewToken"),
                    "400": _error("Not a JSON object, a label too long, or no CSRF token"),
                    "401": unsigned,
                },
            },
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                "summary": "Revoke one of the signed-in person's tokens; it stops at once.",
                "operationId": "revokeToken",
                "security": [{"discordSession": []}],
                "parameters": [_path("token_id", TOKEN_ID_PATTERN)],
                "responses": {
                    "204": {"description": "Revoked"},
                    "400": _error("No CSRF token"),
                    "401": unsigned,
                    "404": _error("No such live token of theirs"),
                },
            }
        },
    }


def _generations() -> dict[str, Any]:
    refusals = {
        code: _error(text, retry=code in ("429", "503")) for code, text in _REFUSALS.items()
    }
    return {
        "summary": "Queue a generation; answers at once with the job id.",
        "operationId": "createGeneration",
        "security": [{}, {"adminToken": []}, {"personalToken": []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": KEY_PATTERN},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/GenerationRequest"}}
            },
        },
        "responses": {
            "202": {
                **_ok("Queued (or the job an Idempotency-Key already made)", "Job"),
                "headers": {"Location": {"description": "The job", "schema": {"type": "string"}}},
            },
            **refusals,
        },
    }


def _list_images() -> dict[str, Any]:
    text = {"type": "string", "maxLength": 200}
    return {
        "summary": "Images, newest first, with search, filters and a cursor.",
        "operationId": "listImages",
        "parameters": [
            _query("q", "Words in the prompt (all must match; the last is a prefix)", text),
            _query("source", "Where it was made", {"type": "string", "enum": ["discord", "web"]}),
            _query("author", "The author's id", {"type": "string", "maxLength": 100}),
            _query("author_name", "The author's name (any case)", {"type": "string"}),
            _query("since", "First day (UTC)", {"type": "string", "format": "date"}),
            _query("until", "Last day (UTC)", {"type": "string", "format": "date"}),
            _query("style", "The style's name", {"type": "string", "maxLength": 64}),
            _query(
                "favourites", "1: only this client's favourites", {"type": "string", "enum": ["1"]}
            ),
            _query(
                "mine",
                "1: only images by the caller (the signed-in person, from Discord or the web)",
                {"type": "string", "enum": ["1"]},
            ),
            _query(
                "cursor",
                "next_cursor from the previous page",
                {"type": "string", "pattern": CURSOR_PATTERN},
            ),
            _query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 100}),
        ],
        "responses": {
            "200": _ok("A page of images", "ImagePage"),
            "400": _error("A filter out of its range"),
            "403": _error("Browsing is off"),
        },
    }


def document(
    settings: Settings,
    models: list[str] | None = None,
    has_inpaint: bool = False,
    styles: list[str] | None = None,
) -> dict[str, Any]:
    """Return the OpenAPI document for these settings' limits, these model names, whether
    an inpainting model serves zoom out and pan, and these style names."""
    models = models or ["default"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagine gallery API", "version": "1"},
        "servers": [{"url": settings.web.public_url or "/"}],
        "components": {
            "schemas": _schemas(settings, models, has_inpaint, list(styles or ())),
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before trying again",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
            },
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "personalToken": {"type": "http", "scheme": "bearer"},
                "discordSession": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
        },
        "paths": {
            "/api/v1/generations": {"post": _generations()},
            "/api/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job's state, queue position, progress, error and image ids.",
                    "operationId": "getJob",
                    "parameters": [_path("job_id", JOB_ID_PATTERN)],
                    "responses": {"200": _ok("The job", "Job"), "404": _error("No such job")},
                }
            },
            "/api/v1/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a queued or running job (the caller's own, or any for the"
                    " admin); a job that has ended is answered as it is.",
                    "operationId": "cancelJob",
                    "security": [{}, {"adminToken": []}],
                    "parameters": [_path("job_id", JOB_ID_PATTERN)],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": _ok("The job, cancelled or stopping", "Job"),
                        "400": _error("The body is not JSON"),
                        "403": _error("Not the caller's job"),
                        "404": _error("No such job"),
                    },
                }
            },
            "/api/v1/images": {"get": _list_images()},
            **_tokens(),
            "/api/v1/images/{image_id}": {
                "get": {
                    "summary": "One image: every setting and its file URL.",
                    "operationId": "getImage",
                    "parameters": [_path("image_id", IMAGE_ID_PATTERN)],
                    "responses": {"200": _ok("The image", "Image"), "404": _error("No such image")},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "operationId": "getOpenApi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
