"""Uploaded init images and masks: every bad input refused with a reason, the rest cleaned."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from engine import uploads
from engine.errors import InvalidRequest
from engine.uploads import (
    DISCORD_CDN_ORIGINS,
    NOTE_FILLED,
    NOTE_FIRST_FRAME,
    NOTE_ROTATED,
    BadImage,
    CleanImage,
    check_attachment_origin,
    clean_image,
    clean_mask,
    fit_size,
)

MAX_BYTES = 8_000_000
RED = (255, 0, 0)
GREEN = (0, 255, 0)
WHITE = (255, 255, 255)


def encode(image: Image.Image, image_format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims any size, built by hand: nothing that large is ever encoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def clean(data: bytes, **overrides: Any) -> CleanImage:
    return clean_image(data, **{"max_bytes": MAX_BYTES, **overrides})


def reopen(cleaned: CleanImage) -> Image.Image:
    image = Image.open(io.BytesIO(cleaned.png))
    image.load()
    return image


def refusal(data: bytes, **overrides: Any) -> str:
    with pytest.raises(BadImage) as caught:
        clean(data, **overrides)
    return caught.value.reason


def test_plain_png_comes_back_as_rgb_png_without_notes() -> None:
    cleaned = clean(encode(Image.new("RGB", (64, 32), RED)))
    image = reopen(cleaned)
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 32))
    assert (cleaned.width, cleaned.height, cleaned.notes) == (64, 32, ())
    assert image.getpixel((0, 0)) == RED


def test_bad_image_is_an_invalid_request_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        clean(b"hello", field="init_image")
    assert isinstance(caught.value, BadImage)
    assert caught.value.field == "init_image"


def test_too_many_bytes_refused_before_decoding() -> None:
    # Garbage would read "not an image" if it were decoded; the size reason proves it was not.
    reason = refusal(b"\x00" * 2500, max_bytes=900)
    assert reason == "the file is 2.5 kB; at most 900 bytes is allowed"


def test_too_many_bytes_names_megabytes() -> None:
    reason = refusal(b"\x00" * 30_000_000, max_bytes=8_000_000)
    assert reason == "the file is 30.0 MB; at most 8.0 MB is allowed"


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"<svg></svg>", b"\x89PNG\r\n"])
def test_not_an_image_refused(data: bytes) -> None:
    assert refusal(data) == "not a PNG, JPEG, WebP or GIF image"


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_refused_naming_the_allowed_ones(image_format: str) -> None:
    data = encode(Image.new("RGB", (32, 32), RED), image_format)
    assert "PNG, JPEG, WebP or GIF" in refusal(data)


def test_truncated_png_refused() -> None:
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    data = encode(noise)
    assert refusal(data[: len(data) // 2]) == "the image file is truncated or damaged"


def test_bomb_refused_from_its_header() -> None:
    reason = refusal(png_header(5000, 5000))
    assert reason == "the image is 5000×5000 = 25,000,000 pixels; at most 16,777,216 are allowed"


@pytest.mark.parametrize("side", [10_000, 30_000])
def test_pillow_bomb_guard_becomes_bad_image(side: int) -> None:
    # 10,000² trips Pillow's warning, 30,000² its error; neither may escape as anything else.
    limit = Image.MAX_IMAGE_PIXELS
    assert "too many pixels" in refusal(png_header(side, side), max_pixels=10**10)
    assert limit == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("size", [(0, 0), (0, 64), (64, 0)])
def test_zero_sized_image_refused(size: tuple[int, int]) -> None:
    # Pillow will not even open a PNG whose header says 0 px, so it reads as no image at all.
    assert refusal(png_header(*size))


def test_side_below_minimum_refused() -> None:
    reason = refusal(encode(Image.new("RGB", (4, 6))), min_side=8)
    assert reason == "the image is 4×6 px; each side must be at least 8 px"


@pytest.mark.parametrize("size", [(1, 20_000), (20_000, 1), (90, 10)])
def test_extreme_aspect_refused_naming_the_ratio(size: tuple[int, int]) -> None:
    reason = refusal(encode(Image.new("L", size)))
    assert "at most 8:1" in reason
    assert f"{size[0]}×{size[1]}" in reason


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in (RED, GREEN)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    cleaned = clean(data)
    assert reopen(cleaned).getpixel((8, 8)) == RED
    assert cleaned.notes == (NOTE_FIRST_FRAME,)


def test_animated_webp_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in (RED, GREEN)]
    data = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True
    )
    cleaned = clean(data)
    assert reopen(cleaned).getpixel((8, 8)) == RED
    assert cleaned.notes == (NOTE_FIRST_FRAME,)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    pixel = reopen(clean(data)).getpixel((8, 8))
    assert isinstance(pixel, tuple)
    red, green, blue = pixel[:3]
    assert red > 240 and green < 15 and blue < 15


def test_16_bit_png_is_scaled_not_clipped() -> None:
    wide = Image.new("I;16", (16, 16), 0)
    wide.paste(65535, (0, 0, 8, 16))
    wide.paste(32896, (8, 0, 16, 16))
    image = reopen(clean(encode(wide)))
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((12, 0)) == (128, 128, 128)


def test_palette_png_with_transparency_filled_with_white() -> None:
    paletted = Image.new("P", (16, 16), 0)
    paletted.putpalette([0, 0, 0, *RED])
    paletted.paste(1, (8, 0, 16, 16))
    cleaned = clean(encode(paletted, transparency=0))
    image = reopen(cleaned)
    assert (image.getpixel((0, 0)), image.getpixel((12, 0))) == (WHITE, RED)
    assert cleaned.notes == (NOTE_FILLED,)


def test_palette_png_without_transparency_keeps_colours() -> None:
    paletted = Image.new("P", (16, 16), 1)
    paletted.putpalette([0, 0, 0, *GREEN])
    cleaned = clean(encode(paletted))
    assert reopen(cleaned).getpixel((0, 0)) == GREEN
    assert cleaned.notes == ()


def test_rgba_png_transparent_pixels_read_back_white() -> None:
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((*RED, 255), (8, 0, 16, 16))
    cleaned = clean(encode(rgba))
    image = reopen(cleaned)
    assert (image.mode, image.getpixel((0, 0)), image.getpixel((12, 0))) == ("RGB", WHITE, RED)
    assert cleaned.notes == (NOTE_FILLED,)


def test_opaque_rgba_gets_no_transparency_note() -> None:
    assert clean(encode(Image.new("RGBA", (16, 16), (*RED, 255)))).notes == ()


@pytest.mark.parametrize("mode", ["1", "L", "LA"])
def test_grey_modes_become_rgb(mode: str) -> None:
    assert reopen(clean(encode(Image.new(mode, (16, 16), 1 if mode == "1" else 200)))).mode == "RGB"


def test_exif_orientation_6_rotates() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    landscape = Image.new("RGB", (40, 20), RED)
    landscape.paste(GREEN, (0, 0, 10, 20))
    cleaned = clean(encode(landscape, "JPEG", exif=exif, quality=95))
    image = reopen(cleaned)
    assert (cleaned.width, cleaned.height, image.size) == (20, 40, (20, 40))
    assert cleaned.notes == (NOTE_ROTATED,)
    # Orientation 6 turns the picture clockwise, so its left edge ends up on top.
    top = image.getpixel((10, 2))
    assert isinstance(top, tuple) and top[1] > 200


def test_exif_orientation_1_gets_no_note() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 1
    assert clean(encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif)).notes == ()


def test_jpeg_exif_and_gps_are_stripped() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    data = encode(Image.new("RGB", (32, 32), RED), "JPEG", exif=exif)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # it was there

    cleaned = clean(data)
    image = reopen(cleaned)
    assert "exif" not in image.info
    assert not image.getexif()
    assert b"SpyCam" not in cleaned.png


def test_png_text_exif_and_icc_chunks_are_stripped() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "secret prompt")
    text.add_itxt("Comment", "more", zip=True)
    icc = b"\x00" * 128
    data = encode(Image.new("RGB", (32, 32)), pnginfo=text, exif=exif, icc_profile=icc)
    assert Image.open(io.BytesIO(data)).info.keys() >= {"parameters", "exif", "icc_profile"}

    cleaned = clean(data)
    image = reopen(cleaned)
    assert isinstance(image, PngImagePlugin.PngImageFile)
    assert image.text == {}
    assert not image.info.keys() & {"exif", "icc_profile", "parameters", "Comment"}
    for kind in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"):
        assert kind not in cleaned.png


def white_square_mask(size: tuple[int, int] = (32, 32), mode: str = "L") -> Image.Image:
    mask = Image.new(mode, size, 0)
    mask.paste(255 if mode == "L" else (255, 255, 255, 255), (8, 8, 24, 24))
    return mask


def test_mask_thresholded_to_black_and_white() -> None:
    grey = Image.new("L", (32, 32), 0)
    grey.paste(100, (0, 0, 8, 32))
    grey.paste(200, (8, 0, 16, 32))
    grey.paste(127, (16, 0, 24, 32))
    grey.paste(128, (24, 0, 32, 32))
    mask = Image.open(io.BytesIO(clean_mask(encode(grey), size=(32, 32), max_bytes=MAX_BYTES)))
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (32, 32))
    assert [mask.getpixel((x, 0)) for x in (0, 8, 16, 24)] == [0, 255, 0, 255]


def test_mask_from_rgba_strokes_on_transparency() -> None:
    strokes = Image.new("RGBA", (32, 32), (255, 255, 255, 0))
    strokes.paste((255, 255, 255, 255), (8, 8, 24, 24))
    data = clean_mask(encode(strokes), size=(32, 32), max_bytes=MAX_BYTES)
    mask = Image.open(io.BytesIO(data))
    assert (mask.getpixel((0, 0)), mask.getpixel((16, 16))) == (0, 255)


@pytest.mark.parametrize("mask_size", [(32, 16), (16, 32), (64, 64)])
def test_mask_of_another_size_refused_naming_both(mask_size: tuple[int, int]) -> None:
    data = encode(white_square_mask(mask_size))
    with pytest.raises(BadImage) as caught:
        clean_mask(data, size=(32, 16) if mask_size != (32, 16) else (16, 32), max_bytes=MAX_BYTES)
    assert caught.value.field == "mask"
    assert f"{mask_size[0]}×{mask_size[1]}" in caught.value.reason


def test_mask_bomb_refused_before_decoding() -> None:
    with pytest.raises(BadImage) as caught:
        clean_mask(png_header(5000, 5000), size=(512, 512), max_bytes=MAX_BYTES)
    assert caught.value.reason == "the mask is 5000×5000 px but the image is 512×512 px"


@pytest.mark.parametrize(
    ("fill", "words"), [(0, "the mask is empty"), (255, "covers the whole image")]
)
def test_mask_empty_or_full_refused(fill: int, words: str) -> None:
    with pytest.raises(BadImage) as caught:
        clean_mask(encode(Image.new("L", (32, 32), fill)), size=(32, 32), max_bytes=MAX_BYTES)
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not a mask", "not a PNG, JPEG, WebP or GIF image"),
        (b"\x00" * 20_000, "the file is 20.0 kB; at most 10.0 kB is allowed"),
        (encode(Image.new("L", (32, 32)), "BMP"), "not a PNG, JPEG, WebP or GIF image"),
        (encode(white_square_mask())[:-40], "the image file is truncated or damaged"),
    ],
)
def test_mask_file_guards(data: bytes, words: str) -> None:
    with pytest.raises(BadImage) as caught:
        clean_mask(data, size=(32, 32), max_bytes=10_000)
    assert words in caught.value.reason


@pytest.mark.parametrize(
    ("size", "limits", "expected"),
    [
        ((1000, 500), {"min_side": 32, "max_side": 768, "max_pixels": 512 * 512}, (720, 360)),
        ((20, 20), {"min_side": 32, "max_side": 768, "max_pixels": 768 * 768}, (32, 32)),
        ((4000, 3000), {"min_side": 64, "max_side": 1024, "max_pixels": 1024**2}, (1024, 768)),
        ((513, 300), {"min_side": 32, "max_side": 1024, "max_pixels": 1024**2}, (512, 296)),
        ((10_000, 100), {"min_side": 30, "max_side": 1000, "max_pixels": 10**6}, (1000, 32)),
    ],
)
def test_fit_size(size: tuple[int, int], limits: dict[str, int], expected: tuple[int, int]) -> None:
    assert fit_size(*size, **limits) == expected


@pytest.mark.parametrize("size", [(1000, 500), (333, 777), (4096, 512), (1, 1), (12345, 6789)])
def test_fit_size_stays_within_limits(size: tuple[int, int]) -> None:
    width, height = fit_size(*size, min_side=32, max_side=768, max_pixels=512 * 512)
    assert width % 8 == 0 and height % 8 == 0
    assert 32 <= width <= 768 and 32 <= height <= 768
    assert width * height <= 512 * 512


def test_fit_size_keeps_aspect() -> None:
    width, height = fit_size(1000, 500, min_side=32, max_side=768, max_pixels=512 * 512)
    assert width / height == pytest.approx(2, rel=0.02)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.discordapp.com/attachments/1/2/cat.png",
        "https://media.discordapp.net/attachments/1/2/cat.png?width=512&height=512",
        "HTTPS://CDN.DiscordApp.com/attachments/1/2/cat.png",
    ],
)
def test_discord_cdn_url_accepted(url: str) -> None:
    check_attachment_origin(url, DISCORD_CDN_ORIGINS)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.discordapp.com/attachments/1/2/cat.png",
        "ftp://cdn.discordapp.com/cat.png",
        "file:///etc/passwd",
        "//cdn.discordapp.com/cat.png",
        "https://evil.example/cat.png",
        "https://cdn.discordapp.com.evil.example/cat.png",
        "https://evilcdn.discordapp.com/cat.png",
        "https://cdn.discordapp.com@evil.example/x.png",
        "https://user:pass@cdn.discordapp.com/x.png",
        "https://evil.example\\@cdn.discordapp.com/x.png",
        "https://cdn.discordapp.com:8443/x.png",
        "https://cdn.discordapp.com:99999/x.png",
        "https://[::1/x.png",
        "https://cdn.disc\nordapp.com/x.png",
        " https://evil.example/x.png",
        "https://127.0.0.1/x.png",
        "",
    ],
)
def test_other_urls_refused(url: str) -> None:
    with pytest.raises(BadImage) as caught:
        check_attachment_origin(url, DISCORD_CDN_ORIGINS)
    assert caught.value.field == "image"


@pytest.mark.parametrize(
    ("url", "is_ok"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/a.png", True),
        ("https://CDN.discordapp.com/attachments/1/2/a.png", True),
        ("http://127.0.0.1:8123/attachments/1/2/a.png", True),
        ("http://127.0.0.1:8124/attachments/1/2/a.png", False),
        ("http://cdn.discordapp.com/a.png", False),
        ("https://cdn.discordapp.com.evil.example/a.png", False),
        ("https://cdn.discordapp.com@evil.example/a.png", False),
        ("https://evil.example/a.png", False),
    ],
)
def test_an_attachment_is_fetched_only_from_a_configured_origin(url: str, is_ok: bool) -> None:
    origins = ("https://cdn.discordapp.com", "http://127.0.0.1:8123")
    if is_ok:
        uploads.check_attachment_origin(url, origins)
    else:
        with pytest.raises(uploads.BadImage, match=r"only fetched from|malformed"):
            uploads.check_attachment_origin(url, origins)
