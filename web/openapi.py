"""The OpenAPI 3.1 document of /api/v1/ (a test checks it matches the routes)."""

from __future__ import annotations

from typing import Any

from engine import ASPECTS, SCHEDULERS, SEED_MAX, Settings


def _error() -> dict[str, Any]:
    return {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _request_schema(settings: Settings) -> dict[str, Any]:
    limits = settings.limits
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "prompt": {
                "type": "string",
                "maxLength": limits.max_prompt_chars,
                "description": "Inline flags such as --ar 3:2 --seed 7 --no cars work.",
            },
            "negative_prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
            "width": {
                "type": "integer",
                "minimum": limits.min_size_px,
                "maximum": limits.max_size_px,
                "multipleOf": 8,
            },
            "height": {
                "type": "integer",
                "minimum": limits.min_size_px,
                "maximum": limits.max_size_px,
                "multipleOf": 8,
            },
            "aspect": {"type": "string", "examples": list(ASPECTS)},
            "steps": {"type": "integer", "minimum": 1, "maximum": limits.max_steps},
            "guidance": {"type": "number", "minimum": 0, "maximum": limits.max_guidance},
            "seed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
            "count": {"type": "integer", "minimum": 1, "maximum": limits.max_count},
            "scheduler": {"type": "string", "enum": list(SCHEDULERS)},
            "kind": {"type": "string", "enum": ["txt2img", "variation", "upscale"]},
            "model": {
                "type": "string",
                "description": "A model name from /status (default: the server's default model).",
            },
            "source_image_id": {
                "type": "string",
                "description": "Required for a variation or an upscale.",
            },
            "idempotency_key": {
                "type": "string",
                "description": "The same key twice queues one job.",
            },
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    nullable_number = {"type": ["number", "null"]}
    return {
        "GenerationRequest": _request_schema(settings),
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        },
        "Job": {
            "type": "object",
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
                    "properties": {"step": {"type": "integer"}, "total": {"type": "integer"}},
                },
                "error": {"type": ["string", "null"]},
                "image_ids": {"type": "array", "items": {"type": "string"}},
                "images": {"type": "array", "items": {"type": "string"}},
                "created_at": {"type": "number"},
                "seconds": nullable_number,
                "page_url": {"type": "string"},
            },
        },
        "Image": {
            "type": "object",
            "properties": {
                **{
                    k: {"type": "string"}
                    for k in (
                        "id",
                        "job_id",
                        "prompt",
                        "negative_prompt",
                        "scheduler",
                        "model",
                        "kind",
                        "source",
                        "author_id",
                        "author_name",
                        "file_url",
                        "download_url",
                        "page_url",
                    )
                },
                **{
                    k: {"type": "integer"}
                    for k in ("seed", "steps", "width", "height", "favourites")
                },
                **{k: {"type": "number"} for k in ("guidance", "seconds", "created_at")},
                "parent_image_id": {"type": ["string", "null"]},
                "message_url": {"type": ["string", "null"]},
                "is_nsfw": {"type": "boolean"},
            },
        },
        "ImagePage": {
            "type": "object",
            "properties": {
                "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
    }


def document(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI document for these settings' limits."""
    errors = {code: _error() for code in ("400", "403", "404", "413", "429", "503")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagine gallery API", "version": "1"},
        "servers": [{"url": settings.web.public_url or "/"}],
        "components": {
            "schemas": _schemas(settings),
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/generations": {
                "post": {
                    "summary": "Queue a generation; answers at once with the job id.",
                    "operationId": "createGeneration",
                    "security": [{}, {"adminToken": []}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/GenerationRequest"}
                            }
                        },
                    },
                    "responses": {"202": _ok("Queued", "Job"), **errors},
                }
            },
            "/api/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job's state, queue position, progress, error and image ids.",
                    "operationId": "getJob",
                    "parameters": [_path("job_id")],
                    "responses": {"200": _ok("The job", "Job"), "404": _error()},
                }
            },
            "/api/v1/images": {
                "get": {
                    "summary": "Images, newest first, with search, filters and a cursor.",
                    "operationId": "listImages",
                    "parameters": [
                        _query("q", "Words in the prompt (all must match; the last is a prefix)"),
                        _query("source", "discord or web"),
                        _query("author", "The author's id"),
                        _query("author_name", "The author's name (any case)"),
                        _query("since", "First day, YYYY-MM-DD (UTC)"),
                        _query("until", "Last day, YYYY-MM-DD (UTC)"),
                        _query("favourites", "1: only this client's favourites"),
                        _query("cursor", "next_cursor from the previous page"),
                        _query("limit", "Page size, 1–100", "integer"),
                    ],
                    "responses": {"200": _ok("A page of images", "ImagePage"), **errors},
                }
            },
            "/api/v1/images/{image_id}": {
                "get": {
                    "summary": "One image: every setting and its file URL.",
                    "operationId": "getImage",
                    "parameters": [_path("image_id")],
                    "responses": {"200": _ok("The image", "Image"), "404": _error()},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "operationId": "getOpenApi",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
    }
