"""One image: its page, its file, download, favourite, delete, variation and upscale."""

from __future__ import annotations

import os
import re
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    send_file,
    session,
)
from flask.typing import ResponseReturnValue

from engine import ImageRecord, NotFound
from web.context import Context, ctx
from web.security import idempotency_key, new_nonce

bp = Blueprint("images", __name__)

IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
FILE_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.png")
# How each link of an image's chain was made, as its page says it.
DERIVED_WORDS = {
    "txt2img": "original",
    "img2img": "from an init image",
    "variation": "variation",
    "upscale": "upscaled",
    "outpaint": "zoomed out or panned",
    "inpaint": "region varied",
}


AGE_KEY = "age_ok"  # the session's note that this signed-in person confirmed the age notice


def may_see_sensitive(context: Context) -> bool:
    """Return whether this client may see age-restricted and flagged images (blurred).

    Moderators always; with `web.nsfw_images = "hide"` nobody else; with sign in with Discord
    configured, only members of `web.guild_id` who confirmed the age notice (`/age`) in this
    session; otherwise everyone who may browse.
    """
    access = context.access
    if access.is_moderator():
        return True
    if context.settings.web.nsfw_images == "hide":
        return False
    if not context.settings.web.discord_client_id:
        return True
    person = access.person()
    return person is not None and access.is_member() and session.get(AGE_KEY) == person.user_id


def is_hidden_nsfw(image: ImageRecord, context: Context) -> bool:
    """Return whether config hides this image from this client."""
    is_nsfw = image.is_nsfw_channel or image.is_flagged
    return is_nsfw and not may_see_sensitive(context)


def visible_image(image_id: str) -> ImageRecord:
    """Return an image this client may see, else abort with 404 (never say why)."""
    context = ctx()
    if not IMAGE_ID.fullmatch(image_id):
        abort(404)
    image = context.library.image(image_id)
    if image is None or is_hidden_nsfw(image, context):
        abort(404)
    if not context.access.may_browse() and not context.access.is_mine(
        image.source, image.author_id
    ):
        abort(404)
    return image


def image_file(image: ImageRecord) -> Path:
    """Return the image's file, only if it lies in the images folder and is a plain file."""
    path = ctx().library.file_path(image)
    if path is None:
        abort(404)
    return path


def safe_link(url: str | None) -> str | None:
    """Return a link only when it is plain https (never javascript: or data:)."""
    if url and url.startswith("https://") and not any(c in url for c in "\"'<> \n"):
        return url
    return None


def image_chain(image: ImageRecord) -> list[ImageRecord]:
    """Return the image's ancestry, oldest first, ending with it (the engine walks it)."""
    if not image.parent_image_id:
        return [image]
    try:
        return ctx().bridge.image_chain(image.id)
    except NotFound:
        return [image]


@bp.get("/files/<path:name>")
def file(name: str) -> Response:
    """Serve an image file by id; every other name, traversal included, is a 404."""
    match = FILE_NAME.fullmatch(name)
    if match is None:
        abort(404)
    path = image_file(visible_image(match.group(1)))
    return send_file(os.fspath(path), mimetype="image/png", max_age=86400)


@bp.get("/images/<image_id>/download")
def download(image_id: str) -> Response:
    """Send the PNG as an attachment; its `parameters` chunk holds every setting."""
    image = visible_image(image_id)
    path = image_file(image)
    return send_file(
        os.fspath(path),
        mimetype="image/png",
        as_attachment=True,
        download_name=f"imagine-{image.id}.png",
    )


@bp.get("/images/<image_id>")
def page(image_id: str) -> str:
    """Show an image with everything needed to reproduce it."""
    context = ctx()
    image = visible_image(image_id)
    requester = context.access.requester()
    chain = image_chain(image)
    return render_template(
        "image.html",
        image=image,
        chain=chain,
        chain_shown={link.id for link in chain if not is_hidden_nsfw(link, context)},
        derived_words=DERIVED_WORDS,
        may_edit=context.access.may_generate() and context.editing().is_available,
        message_url=safe_link(image.message_url),
        is_blurred=(image.is_nsfw_channel or image.is_flagged)
        and context.settings.web.nsfw_images == "blur",
        is_favourite=context.library.is_favourite(image.id, requester.key),
        may_delete=context.access.is_moderator()
        or context.access.is_mine(image.source, image.author_id),
        nonces={"variation": new_nonce(), "upscale": new_nonce()},
    )


@bp.post("/images/<image_id>/favourite")
def favourite(image_id: str) -> ResponseReturnValue:
    """Add or remove this client's favourite."""
    context = ctx()
    image = visible_image(image_id)
    is_on = request.form.get("on", "1") == "1"
    context.library.set_favourite(image.id, context.access.requester().key, is_on)
    return redirect(f"/images/{image.id}", 303)


@bp.post("/images/<image_id>/delete")
def delete(image_id: str) -> ResponseReturnValue:
    """Delete an image (its author, a moderator, or the admin token)."""
    context = ctx()
    image = visible_image(image_id)
    context.bridge.delete_image(image.id, context.access.requester())
    return redirect("/", 303)


@bp.post("/images/<image_id>/variation")
def variation(image_id: str) -> ResponseReturnValue:
    """Queue a variation of this image."""
    return _derive(image_id, "variation")


@bp.post("/images/<image_id>/upscale")
def upscale(image_id: str) -> ResponseReturnValue:
    """Queue a 2× upscale of this image."""
    return _derive(image_id, "upscale")


def _derive(image_id: str, kind: str) -> ResponseReturnValue:
    context = ctx()
    context.access.require_generate()
    image = visible_image(image_id)
    bridge = context.bridge
    requester = context.access.requester()
    job_request = (
        bridge.variation_request(image.id, requester)
        if kind == "variation"
        else bridge.upscale_request(image.id, requester)
    )
    job = bridge.submit(
        job_request, requester, {"web": kind}, idempotency_key(request.form, requester)
    )
    return redirect(f"/jobs/{job.id}", 303)
