"""The one table from engine errors and HTTP errors to a status code and words (page or JSON)."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from engine import (
    Banned,
    Blocked,
    BudgetExceeded,
    EngineError,
    Forbidden,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    QueueFull,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
    TooLarge,
)
from engine.uploads import size_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What the user is told: status, a short code for machines, words for people."""

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after_s: float | None = None


def _ban(error: Banned) -> Answer:
    until = "for good" if error.until is None else "for now"
    return Answer(403, "banned", f"You are banned from generating {until}.")


def _retry(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))} s"


_ENGINE: dict[type[EngineError], Callable[[Any], Answer]] = {
    InvalidRequest: lambda e: Answer(400, "invalid", f"{e.field}: {e.reason}", e.field),
    # Well-formed, every field in range, but too much together: 422, as the OpenAPI says.
    TooLarge: lambda e: Answer(422, "too_big", f"{e.field}: {e.reason}", e.field),
    BudgetExceeded: lambda e: Answer(
        422,
        "too_big",
        f"Too much work: width × height × steps × count is {e.cost:,}; the limit is {e.budget:,}.",
        "steps",
    ),
    Blocked: lambda e: Answer(422, "blocked", "This prompt is not allowed here."),
    Banned: _ban,
    Forbidden: lambda e: Answer(403, "forbidden", f"Not allowed: {e.action}."),
    NotFound: lambda e: Answer(404, "not_found", f"No such {e.kind}."),
    # Your share of the queue is full: 429, you are over your share (the server is not full).
    QueueFull: lambda e: (
        Answer(
            429,
            "too_many_jobs",
            f"You already have {e.waiting} jobs waiting (the most allowed is {e.limit}); "
            f"try again in {_retry(e.retry_after_s)}.",
            retry_after_s=e.retry_after_s,
        )
        if e.is_per_requester
        else Answer(
            503,
            "queue_full",
            f"The queue is full; try again in {_retry(e.retry_after_s)}.",
            retry_after_s=e.retry_after_s,
        )
    ),
    RateLimited: lambda e: Answer(
        429,
        "rate_limited",
        f"Slow down: try again in {_retry(e.retry_after_s)}.",
        retry_after_s=e.retry_after_s,
    ),
    QuotaExceeded: lambda e: Answer(
        429,
        "quota_exceeded",
        f"Daily quota used ({e.used}/{e.limit}); it frees up in {_retry(e.resets_in_s)}.",
        retry_after_s=e.resets_in_s,
    ),
    ShuttingDown: lambda e: Answer(503, "shutting_down", "The server is restarting; try again."),
    ModelUnavailable: lambda e: Answer(503, "model_unavailable", "The model is not available."),
    GenerationFailed: lambda e: Answer(500, "failed", "The generation failed."),
}

_HTTP_WORDS = {
    400: "That request was not understood.",
    403: "You may not do that here.",
    404: "Nothing here. The page or image does not exist, or was deleted.",
    405: "That method is not allowed here.",
    413: "That request is too large.",
    429: "Too many requests; slow down and try again shortly.",
    500: "Sorry, something went wrong on our side.",
    503: "The service is busy or restarting; try again shortly.",
    504: "The engine did not answer in time; try again.",
}


def answer_for(error: BaseException) -> Answer:
    """Return the answer for an engine error, an HTTP error or anything else."""
    for kind in type(error).__mro__:
        if kind in _ENGINE:
            return _ENGINE[kind](error)
    if isinstance(error, CSRFError):
        return Answer(400, "csrf", "The form expired or came from another site; reload and retry.")
    if isinstance(error, HTTPException):
        status = error.code or 500
        return Answer(status, _code_of(error), _HTTP_WORDS.get(status, error.name))
    if isinstance(error, TimeoutError):
        return Answer(504, "timeout", _HTTP_WORDS[504])
    if isinstance(error, EngineError):
        return Answer(500, "engine_error", _HTTP_WORDS[500])
    return Answer(500, "internal", _HTTP_WORDS[500])


def _code_of(error: HTTPException) -> str:
    return (error.name or "error").lower().replace(" ", "_")


def wants_json() -> bool:
    """Return whether the client should get JSON (the API, or an explicit Accept)."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def respond(error: BaseException) -> tuple[Response | str, int]:
    """Render an error as a page or JSON, with Retry-After where it helps."""
    answer = answer_for(error)
    if answer.status >= 500 and not isinstance(error, EngineError | HTTPException | TimeoutError):
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=error)
    if answer.status == 413:
        answer = _too_large(answer)
    if wants_json():
        body: dict[str, Any] = {"error": answer.code, "message": answer.message}
        if answer.field:
            body["field"] = answer.field
        response = jsonify(body)
    else:
        response = Response(render_template("error.html", answer=answer), mimetype="text/html")
    if answer.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(answer.retry_after_s)))
    elif answer.status == 429 and isinstance(error, HTTPException) and error.response:
        retry = error.response.headers.get("Retry-After")
        if retry:
            response.headers["Retry-After"] = retry
    return response, answer.status


def _too_large(answer: Answer) -> Answer:
    """Say how large an upload may be: the one limit people can act on."""
    limit = current_app.extensions["imagine"].settings.limits.max_upload_bytes
    words = f"That request is too large: an image upload may be at most {size_text(limit)}."
    return dataclasses.replace(answer, message=words)


def register(app: Flask) -> None:
    """Answer every error through the table above."""
    app.register_error_handler(EngineError, respond)
    app.register_error_handler(HTTPException, respond)
    app.register_error_handler(TimeoutError, respond)
    app.register_error_handler(Exception, respond)
