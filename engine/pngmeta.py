"""The A1111-compatible `parameters` PNG text chunk: write it and read it back."""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, PngImagePlugin


@dataclass(frozen=True)
class Parameters:
    """What A1111's "PNG Info" shows for one image."""

    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    extra: tuple[tuple[str, str], ...] = ()

    def to_text(self) -> str:
        """Return the chunk text: prompt, `Negative prompt:` line, settings line."""
        settings = [
            ("Steps", str(self.steps)),
            ("Sampler", self.sampler),
            ("CFG scale", f"{self.cfg_scale:g}"),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
            ("Model", self.model),
            *self.extra,
        ]
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in settings))
        return "\n".join(lines)


def _quote(value: str) -> str:
    if any(c in value for c in ',:\n"'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return value


_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def parse(text: str) -> Parameters:
    """Parse chunk text written by `to_text` (or by A1111) back into fields."""
    lines = text.split("\n")
    settings_line = lines[-1]
    body = lines[:-1]
    negative_at = next(
        (i for i, line in enumerate(body) if line.startswith("Negative prompt:")), None
    )
    if negative_at is None:
        prompt, negative = "\n".join(body), ""
    else:
        prompt = "\n".join(body[:negative_at])
        negative = "\n".join(body[negative_at:])[len("Negative prompt:") :].strip()
    fields: dict[str, str] = {}
    for match in _PAIR.finditer(settings_line):
        value = match.group(2).strip()
        if value.startswith('"'):
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        fields[match.group(1).strip()] = value
    width, height = (int(v) for v in fields.get("Size", "0x0").split("x"))
    known = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model"}
    return Parameters(
        prompt=prompt,
        negative_prompt=negative,
        steps=int(fields.get("Steps", 0)),
        sampler=fields.get("Sampler", ""),
        cfg_scale=float(fields.get("CFG scale", 0)),
        seed=int(fields.get("Seed", 0)),
        width=width,
        height=height,
        model=fields.get("Model", ""),
        extra=tuple((k, v) for k, v in fields.items() if k not in known),
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def with_parameters(png: bytes, parameters: Parameters) -> bytes:
    """Return PNG bytes with a `parameters` text chunk added after IHDR (no re-encoding)."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    text = parameters.to_text()
    # As Pillow's add_text (what A1111 calls) writes it: tEXt when Latin-1 holds the text,
    # else iTXt in UTF-8.
    try:
        kind, data = b"tEXt", b"parameters\x00" + text.encode("latin-1")
    except UnicodeEncodeError:
        kind, data = b"iTXt", b"parameters\x00\x00\x00\x00\x00" + text.encode("utf-8")
    crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    chunk = struct.pack(">I", len(data)) + kind + data + crc
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def encode_png(image: Image.Image, parameters: Parameters) -> bytes:
    """Return PNG bytes carrying the `parameters` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters.to_text())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def read_parameters(data: bytes | str) -> Parameters | None:
    """Return the parameters stored in a PNG (bytes or a path), or None."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(source) as image:
        text = image.info.get("parameters")
    return parse(text) if isinstance(text, str) else None
