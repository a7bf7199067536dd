"""Uploaded files in a form (init images, masks): read within the limit, then cleaned.

The body of a form with an upload is capped at `upload_body_bytes` (a 413 past it), so a file
read here is never much larger than `limits.max_upload_bytes`; the engine's `clean_image`
turns it into a plain RGB PNG without metadata (EXIF and GPS never kept) or refuses it,
naming the field and the size.
"""

from __future__ import annotations

from werkzeug.datastructures import FileStorage, MultiDict

from engine import Settings
from engine.uploads import CleanImage, clean_image

# Room in a form with an upload for everything but the file: two prompts, a few numbers and
# the multipart framing.
FORM_SLACK_BYTES = 64 * 1024


def upload_body_bytes(settings: Settings) -> int:
    """Return the largest request body a form with one upload may send."""
    limit = settings.limits.max_upload_bytes + FORM_SLACK_BYTES
    return max(settings.web.max_body_bytes, limit + 16 * settings.limits.max_prompt_chars)


def read_upload(files: MultiDict[str, FileStorage], field: str) -> bytes | None:
    """Return a file field's bytes, or None when no file was chosen."""
    upload = files.get(field)
    if upload is None or not upload.filename:
        return None
    return upload.stream.read()


def init_image(
    files: MultiDict[str, FileStorage], settings: Settings, field: str = "init_image"
) -> CleanImage | None:
    """Return the cleaned init image of a form, None without one; raise BadImage if unusable."""
    limit = settings.limits.max_upload_bytes
    data = read_upload(files, field)
    if data is None:
        return None
    return clean_image(data, field=field, max_bytes=limit)
