"""Check and clean user-supplied images (img2img init images, inpainting masks).

The Discord bot and the web gallery pass every upload through here before anything is queued
or stored. Only PNG, JPEG, WebP and GIF are parsed at all, sizes are checked from the header
before any pixel is decoded, and what comes out is a fresh PNG with no metadata, so EXIF (GPS
included), text chunks and ICC profiles from the upload are never kept.
"""

from __future__ import annotations

import io
import math
import struct
import threading
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from PIL import Image, ImageOps

from engine.errors import InvalidRequest

DISCORD_CDN_ORIGINS = ("https://cdn.discordapp.com", "https://media.discordapp.net")

# MPO is what Pillow calls a JPEG with extra pictures (phone depth maps, stereo shots).
_OPENED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_ACCEPTED_FORMATS = frozenset({*_OPENED_FORMATS, "MPO"})
_FORMATS_TEXT = "PNG, JPEG, WebP or GIF"
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_ORIENTATION_TAG = 0x0112
_DAMAGED = "the image file is truncated or damaged"
# What Pillow raises on a malformed file; anything else is a bug and should surface as one.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

# warnings.catch_warnings changes process-wide filters: decodes take turns (uploads are rare).
_WARNINGS_LOCK = threading.Lock()

NOTE_FIRST_FRAME = "an animated image: its first frame was used"
NOTE_ROTATED = "rotated as its EXIF orientation says"
NOTE_FILLED = "transparent areas were filled with white"


class BadImage(InvalidRequest):
    """An uploaded image or mask that cannot be used; the reason names the problem."""


@dataclass(frozen=True)
class CleanImage:
    """An upload that passed the checks: an RGB PNG without metadata, and what was changed."""

    png: bytes
    width: int
    height: int
    notes: tuple[str, ...] = ()


def clean_image(
    data: bytes,
    *,
    field: str = "image",
    max_bytes: int,
    max_pixels: int = 4096 * 4096,
    min_side: int = 8,
    max_aspect: float = 8.0,
) -> CleanImage:
    """Check an uploaded image and re-encode it as a metadata-free RGB PNG.

    Refuses files over `max_bytes` before decoding, formats other than PNG, JPEG, WebP and GIF,
    more than `max_pixels` (read from the header, before decoding), a side under `min_side`
    and a long/short side ratio over `max_aspect`. Raises BadImage naming the problem.
    """
    _check_bytes(data, field, max_bytes)
    notes: list[str] = []
    with _decoding(field):
        image = _open(data, field)
        width, height = image.size
        _check_pixels(width, height, field, max_pixels)
        _check_shape(width, height, field, min_side, max_aspect)
        image = _load_first_frame(image, field, notes)
        image = _transpose(image, field, notes)
        rgb, is_filled = _to_rgb(image, background=(255, 255, 255))
    if is_filled:
        notes.append(NOTE_FILLED)
    return CleanImage(_encode(rgb, "RGB"), rgb.width, rgb.height, tuple(notes))


def clean_mask(data: bytes, *, size: tuple[int, int], field: str = "mask", max_bytes: int) -> bytes:
    """Check an inpainting mask for an image of `size` and return it as an "L" PNG of 0/255.

    White (255) marks the area to repaint. Transparent areas count as black (keep). The mask
    must be exactly `size` once its EXIF orientation is applied, and neither empty nor full.
    """
    _check_bytes(data, field, max_bytes)
    with _decoding(field):
        image = _open(data, field)
        # The exact size is known, so checking it before decoding is also the bomb guard.
        if image.size not in (size, size[::-1]):
            raise BadImage(field, _size_mismatch(image.size, size))
        image = _transpose(_load_first_frame(image, field, []), field, [])
        rgb, _ = _to_rgb(image, background=(0, 0, 0))
    if rgb.size != size:
        raise BadImage(field, _size_mismatch(rgb.size, size))
    mask = rgb.convert("L").point([0] * 128 + [255] * 128)
    low, high = mask.getextrema()
    if high == 0:
        raise BadImage(field, "the mask is empty: paint the area to change in white")
    if low == 255:
        raise BadImage(field, "the mask covers the whole image: use img2img instead")
    return _encode(mask, "L")


def fit_size(
    width: int, height: int, *, min_side: int, max_side: int, max_pixels: int, multiple: int = 8
) -> tuple[int, int]:
    """Return the generation size that keeps an image's aspect within the size limits.

    The image is scaled down (never up) until both sides are at most `max_side` and the area at
    most `max_pixels`; each side is rounded down to a multiple of `multiple`, but not below
    `min_side` rounded up to one.
    """
    if width < 1 or height < 1 or multiple < 1:
        raise ValueError(f"expected positive sizes, got {width}×{height} in steps of {multiple}")
    floor_side = math.ceil(min_side / multiple) * multiple
    if floor_side > max_side or floor_side * floor_side > max_pixels:
        raise ValueError(f"min_side {min_side} does not fit max_side {max_side}/{max_pixels}")
    scale = min(1.0, max_side / max(width, height), math.sqrt(max_pixels / (width * height)))
    sides = [max(floor_side, int(side * scale) // multiple * multiple) for side in (width, height)]
    # Guard against float rounding (and the min_side floor) pushing the area past the limit.
    while sides[0] * sides[1] > max_pixels:
        longer = 0 if sides[0] >= sides[1] else 1
        sides[longer] -= multiple
    return sides[0], sides[1]


def check_attachment_origin(url: str, origins: Collection[str]) -> None:
    """Refuse an attachment URL unless its scheme://host[:port] is exactly one of `origins`
    (`[bot] attachment_origins`: Discord's CDN by default). Nothing is fetched."""
    if any(ord(char) <= 32 or ord(char) == 127 or char == "\\" for char in url):
        raise BadImage("image", "the attachment URL has spaces, control characters or '\\'")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise BadImage("image", "the attachment URL is malformed") from error
    allowed = {origin.lower().rstrip("/") for origin in origins}
    origin = f"{parts.scheme.lower()}://{parts.hostname or ''}" + (f":{port}" if port else "")
    if parts.username is not None or parts.password is not None or origin not in allowed:
        raise BadImage("image", f"attachments are only fetched from {', '.join(sorted(allowed))}")


def _check_bytes(data: bytes, field: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        reason = f"the file is {size_text(len(data))}; at most {size_text(max_bytes)} is allowed"
        raise BadImage(field, reason)


def size_text(count: int) -> str:
    """Return a byte count as people read it: 512 bytes, 3.4 kB, 12.0 MB."""
    if count < 1000:
        return f"{count} bytes"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1_000_000:.1f} MB"


@contextmanager
def _decoding(field: str) -> Iterator[None]:
    """Turn Pillow's own bomb guard into BadImage without changing Image.MAX_IMAGE_PIXELS."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt-EXIF notes and the like: metadata is dropped
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(field, "the image has too many pixels to decode safely") from error


def _open(data: bytes, field: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=_OPENED_FORMATS)
    except _DECODE_ERRORS as error:
        raise BadImage(field, f"not a {_FORMATS_TEXT} image") from error
    if image.format not in _ACCEPTED_FORMATS:
        raise BadImage(field, f"{image.format} images are not accepted; use {_FORMATS_TEXT}")
    return image


def _check_pixels(width: int, height: int, field: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        reason = (
            f"the image is {width}×{height} = {width * height:,} pixels; "
            f"at most {max_pixels:,} are allowed"
        )
        raise BadImage(field, reason)


def _check_shape(width: int, height: int, field: str, min_side: int, max_aspect: float) -> None:
    size = f"the image is {width}×{height} px"
    if min(width, height) == 0:
        raise BadImage(field, f"{size}; each side must be at least {min_side} px")
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect:
        raise BadImage(field, f"{size}, a ratio of {ratio:.1f}:1; at most {max_aspect:g}:1")
    if min(width, height) < min_side:
        raise BadImage(field, f"{size}; each side must be at least {min_side} px")


def _load_first_frame(image: Image.Image, field: str, notes: list[str]) -> Image.Image:
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
            notes.append(NOTE_FIRST_FRAME)
        image.load()
    except _DECODE_ERRORS as error:
        raise BadImage(field, _DAMAGED) from error
    return image


def _transpose(image: Image.Image, field: str, notes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        transposed = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as error:
        raise BadImage(field, _DAMAGED) from error
    if orientation in range(2, 9):
        notes.append(NOTE_ROTATED)
    return image if transposed is None else transposed


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> tuple[Image.Image, bool]:
    """Return the image as RGB, and whether transparent pixels were put on `background`."""
    if image.mode in _WIDE_GREY_MODES:
        # Scale 0–65535 to 0–255; a plain convert("L") would clip everything above 255 to white.
        return image.convert("I").point(lambda value: value / 257).convert("RGB"), False
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image.convert("RGB"), False
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        return rgba.convert("RGB"), False
    flat = Image.new("RGBA", rgba.size, (*background, 255))
    flat.alpha_composite(rgba)
    return flat.convert("RGB"), True


def _encode(image: Image.Image, mode: str) -> bytes:
    # A fresh image carries no info dict, so the PNG writer finds no exif, icc_profile,
    # transparency or text to copy from the upload.
    fresh = Image.new(mode, image.size)
    fresh.paste(image)
    buffer = io.BytesIO()
    fresh.save(buffer, format="PNG")
    return buffer.getvalue()


def _size_mismatch(got: tuple[int, int], want: tuple[int, int]) -> str:
    return f"the mask is {got[0]}×{got[1]} px but the image is {want[0]}×{want[1]} px"
