"""Bulk actions on images ticked in the grid: add to a board, delete, download as a zip.

Every action goes through one confirm page first. Each image is checked on its own, as its page
would be: deleting skips images that are not this client's (unless a moderator asks), a zip
holds only images this client may see, and both are bounded.
"""

from __future__ import annotations

import io
import os
import zipfile

from flask import Blueprint, abort, render_template, request, send_file
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from engine import Forbidden, ImageRecord, InvalidRequest, NotFound
from web.boards import _owned
from web.context import ctx
from web.images import IMAGE_ID, visible_image

bp = Blueprint("bulk", __name__)

MAX_SELECTED = 100
MAX_ZIP_BYTES = 200 * 1024 * 1024
ACTIONS = {"board": "Add to board", "delete": "Delete", "zip": "Download as a zip"}


def selected_ids() -> list[str]:
    """Return the ticked image ids (unique, in order); raise InvalidRequest past the bound."""
    ids = list(dict.fromkeys(request.form.getlist("image")))
    if not ids:
        raise InvalidRequest("image", "tick at least one image")
    if len(ids) > MAX_SELECTED:
        raise InvalidRequest("image", f"expected at most {MAX_SELECTED} images at once")
    if not all(IMAGE_ID.fullmatch(i) for i in ids):
        raise InvalidRequest("image", "expected image ids")
    return ids


def _action() -> str:
    action = request.form.get("action", "")
    if action not in ACTIONS:
        raise InvalidRequest("action", f"expected one of {', '.join(ACTIONS)}")
    return action


def _visible(ids: list[str]) -> list[ImageRecord]:
    found = []
    for image_id in ids:
        try:
            found.append(visible_image(image_id))
        except HTTPException:
            continue
    return found


@bp.post("/bulk")
def confirm() -> ResponseReturnValue:
    """Show what is about to happen to the ticked images, with one button to do it."""
    action, ids = _action(), selected_ids()
    board = _owned(request.form.get("board", ""))[0] if action == "board" else None
    images = _visible(ids)
    return render_template(
        "bulk.html", action=action, words=ACTIONS[action], images=images, board=board
    )


@bp.post("/bulk/confirm")
def run() -> ResponseReturnValue:
    """Do the confirmed action."""
    action, ids = _action(), selected_ids()
    if action == "zip":
        return _zip(_visible(ids))
    context = ctx()
    images = _visible(ids)
    if action == "board":
        board, key = _owned(request.form.get("board", ""))
        context.library.set_on_board(board.id, key, [i.id for i in images], True)
        done, skipped = len(images), len(ids) - len(images)
        return render_template("bulk_done.html", words="Added", done=done, skipped=skipped)
    requester = context.access.requester()
    done = 0
    for image in images:
        try:
            context.bridge.delete_image(image.id, requester)
            done += 1
        except (Forbidden, NotFound):
            continue
    return render_template("bulk_done.html", words="Deleted", done=done, skipped=len(ids) - done)


def _zip(images: list[ImageRecord]) -> ResponseReturnValue:
    library = ctx().library
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs do not shrink
        for image in images:
            path = library.file_path(image)
            if path is None:
                continue
            total += os.path.getsize(path)
            if total > MAX_ZIP_BYTES:
                abort(413)
            archive.write(path, f"imagine-{image.id}.png")
    buffer.seek(0)
    return send_file(
        buffer,
        mimetype="application/zip",
        as_attachment=True,
        download_name=f"imagine-{len(images)}-images.zip",
    )
