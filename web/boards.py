"""Boards: named sets of images a signed-in person keeps (nothing is copied), public or private.

Only the owner sees a private board or changes any board; everyone else gets 404, never a hint
that it exists. A public board is seen by whoever may browse the gallery.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request
from flask.typing import ResponseReturnValue

from engine import Board, InvalidRequest
from web.context import ctx
from web.images import IMAGE_ID, is_hidden_nsfw, visible_image

bp = Blueprint("boards", __name__)

MAX_NAME_CHARS = 80
BOARD_IMAGES = 500
_BOARD_ID = IMAGE_ID


def owner_key() -> str:
    """Return the signed-in person's key; 401 without one (boards belong to people)."""
    context = ctx()
    if context.access.person() is None:
        abort(401)
    return context.access.requester().key


def my_boards() -> list[Board]:
    """Return the signed-in person's boards (for the image page's "Add to board"), or []."""
    context = ctx()
    if context.access.person() is None:
        return []
    return context.library.boards_of(context.access.requester().key)


def board_name(text: str | None) -> str:
    """Return a board name from a form; raise InvalidRequest naming the field."""
    name = " ".join((text or "").split())
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidRequest("name", f"expected 1–{MAX_NAME_CHARS} characters")
    return name


def visible_board(board_id: str) -> Board:
    """Return a board this client may see, else 404."""
    context = ctx()
    board = context.library.board(board_id) if _BOARD_ID.fullmatch(board_id) else None
    if board is None:
        abort(404)
    person = context.access.person()
    is_owner = person is not None and board.owner_key == context.access.requester().key
    if not is_owner and not (board.is_public and context.access.may_browse()):
        abort(404)
    return board


def _owned(board_id: str) -> tuple[Board, str]:
    key = owner_key()
    board = visible_board(board_id)
    if board.owner_key != key:
        abort(404)
    return board, key


@bp.get("/boards")
def index() -> ResponseReturnValue:
    """List my boards, with a form for a new one."""
    key = owner_key()
    return render_template("boards.html", boards=ctx().library.boards_of(key))


@bp.post("/boards")
def create() -> ResponseReturnValue:
    """Make a board."""
    key = owner_key()
    name = board_name(request.form.get("name"))
    board = ctx().library.create_board(key, name, request.form.get("public") == "1")
    return redirect(f"/boards/{board.id}", 303)


@bp.get("/boards/<board_id>")
def page(board_id: str) -> ResponseReturnValue:
    """Show a board's images (the owner also gets its controls)."""
    context = ctx()
    board = visible_board(board_id)
    person = context.access.person()
    is_owner = person is not None and board.owner_key == context.access.requester().key
    found = context.library.board_images(board.id, BOARD_IMAGES)
    images = [image for image in found if not is_hidden_nsfw(image, context)]
    return render_template("board.html", board=board, images=images, is_owner=is_owner)


@bp.post("/boards/<board_id>/rename")
def rename(board_id: str) -> ResponseReturnValue:
    """Rename a board."""
    board, key = _owned(board_id)
    ctx().library.update_board(board.id, key, name=board_name(request.form.get("name")))
    return redirect(f"/boards/{board.id}", 303)


@bp.post("/boards/<board_id>/visibility")
def visibility(board_id: str) -> ResponseReturnValue:
    """Make a board public or private."""
    board, key = _owned(board_id)
    ctx().library.update_board(board.id, key, is_public=request.form.get("public") == "1")
    return redirect(f"/boards/{board.id}", 303)


@bp.post("/boards/<board_id>/delete")
def delete(board_id: str) -> ResponseReturnValue:
    """Delete a board; its images stay in the gallery."""
    board, key = _owned(board_id)
    ctx().library.delete_board(board.id, key)
    return redirect("/boards", 303)


@bp.post("/boards/<board_id>/remove")
def remove(board_id: str) -> ResponseReturnValue:
    """Take an image off a board."""
    board, key = _owned(board_id)
    image_id = request.form.get("image", "")
    if IMAGE_ID.fullmatch(image_id):
        ctx().library.set_on_board(board.id, key, [image_id], False)
    return redirect(f"/boards/{board.id}", 303)


@bp.post("/images/<image_id>/board")
def add(image_id: str) -> ResponseReturnValue:
    """Put an image this person may see on one of their boards."""
    image = visible_image(image_id)
    board, key = _owned(request.form.get("board", ""))
    ctx().library.set_on_board(board.id, key, [image.id], True)
    return redirect(f"/images/{image.id}", 303)
