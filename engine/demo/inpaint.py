"""The demo model's inpainting twin: SD 2's inpainting layout, trained from the txt2img model.

Its UNet reads 9 channels — the noisy latent, the mask and the masked image's latent, the
layout of stabilityai/stable-diffusion-2-inpainting — so it loads as any diffusers
StableDiffusionInpaintPipeline and the engine serves zoom out, pan and vary region with it. It
starts as the txt2img UNet (the 5 new input channels at zero, as SD's inpainting model was
made), and learns on the same drawn scenes with random masks: a box around the shape (vary
region), random boxes and brush strokes, at 32 and 48 px; and every third step on the engine's
own zoom-out and pan canvases (48 or 64 px around a 32 px scene, the new area in its
background colour, as a zoom out of such a scene shows), so what the engine asks is what it
learnt. (Border masks on whole scenes instead — tried first — left it redrawing the caption
at the canvas's scale over the old image.) The VAE and
the text encoder are the txt2img model's, unchanged, so the shipped folder links to them and
adds only its UNet.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from engine.demo.captions import Caption, sample_caption
from engine.demo.classify import read_image
from engine.demo.dataset import CENTRES, RADII, draw
from engine.demo.evaluate import ATTRIBUTES, GUIDANCE, STEPS, write_defaults

INPAINT_DIR = Path(__file__).parent / "model-inpaint"
SHARED = ("vae", "text_encoder", "tokenizer")  # the txt2img model's, linked, not copied
MASK_KINDS = ("shape", "box", "strokes", "zoom", "pan")
# The box that hides a shape: its drawn outline reaches 1.25 radii (a star's points), plus the
# dataset's jitter (3 % of the side, 8 % of the radius).
SHAPE_BOX_RADII = 1.5


@dataclass(frozen=True)
class InpaintRecipe:
    """Everything that decides an inpainting run. The defaults are the shipped twin's."""

    seed: int = 0
    steps: int = 1500
    batch: int = 64
    lr: float = 5e-4
    warmup_steps: int = 50
    cfg_dropout: float = 0.1
    t_power: float = 0.75
    ema_decay: float = 0.995
    sizes: tuple[int, ...] = (32, 32, 48)  # of the scenes under inpaint masks, in turn
    outpaint_every: int = 3  # every third step: zoom out and pan canvases, as the engine makes
    threads: int = 2


def shape_box(caption: Caption, size_px: int) -> tuple[float, float, float, float]:
    """Return the box (left, top, right, bottom, in pixels) that covers the caption's shape."""
    fx, fy = CENTRES[caption.position]
    half = RADII[caption.size] * SHAPE_BOX_RADII * size_px
    cx, cy = fx * size_px, fy * size_px
    return cx - half, cy - half, cx + half, cy + half


def random_mask(rng: random.Random, caption: Caption, size_px: int, kind: str = "") -> np.ndarray:
    """Return a float32 mask (1 = paint) of one of MASK_KINDS (random when `kind` is empty)."""
    kind = kind or rng.choice(MASK_KINDS)
    image = Image.new("L", (size_px, size_px), 0)
    pen = ImageDraw.Draw(image)
    s = size_px
    if kind == "shape":
        pen.rectangle(shape_box(caption, s), fill=255)
    elif kind == "box":
        w, h = rng.uniform(0.25, 0.6) * s, rng.uniform(0.25, 0.6) * s
        x, y = rng.uniform(0, s - w), rng.uniform(0, s - h)
        pen.rectangle((x, y, x + w, y + h), fill=255)
    elif kind == "strokes":
        for _ in range(rng.randint(1, 3)):
            points = [(rng.uniform(0, s), rng.uniform(0, s)) for _ in range(rng.randint(2, 4))]
            pen.line(points, fill=255, width=max(2, round(rng.uniform(0.12, 0.2) * s)))
    elif kind == "zoom":
        inner = s / rng.choice((1.5, 2.0))
        start = (s - inner) / 2
        pen.rectangle((0, 0, s, s), fill=255)
        pen.rectangle((start, start, start + inner, start + inner), fill=0)
    elif kind == "pan":
        strip = s / 3
        side = rng.choice(("left", "right", "top", "bottom"))
        box = {
            "left": (0, 0, strip, s),
            "right": (s - strip, 0, s, s),
            "top": (0, 0, s, strip),
            "bottom": (0, s - strip, s, s),
        }[side]
        pen.rectangle(box, fill=255)
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    mask = np.asarray(image, dtype=np.float32) / 255.0
    return (mask >= 0.5).astype(np.float32)


def inpaint_batch(
    rng: random.Random, batch: int, size_px: int
) -> tuple[list[Caption], np.ndarray, np.ndarray]:
    """Scenes at `size_px` under shape, box and stroke masks: captions, pixels, masks."""
    n = max(8, round(batch * (32 / size_px) ** 2))
    captions = [sample_caption(rng) for _ in range(n)]
    pixels = np.stack([np.asarray(draw(c, size_px, rng)) for c in captions])
    kinds = ("shape", "box", "strokes")
    masks = np.stack([random_mask(rng, c, size_px, rng.choice(kinds)) for c in captions])
    return captions, pixels, masks


def outpaint_batch(
    rng: random.Random, batch: int, size_px: int = 32
) -> tuple[list[Caption], np.ndarray, np.ndarray]:
    """One zoom out or pan for the whole batch, on the engine's own canvas: the scene drawn at
    `size_px` where the engine puts the old image, the new area in the scene's background (what
    a zoom out of that scene shows), and the mask over the new area."""
    from engine.canvas import MOVES, canvas_size
    from engine.demo.captions import COLOURS

    move = rng.choice(MOVES)
    width, height, left, top = canvas_size(size_px, size_px, move)
    n = max(8, round(batch * 1024 / (width * height)))
    captions = [sample_caption(rng) for _ in range(n)]
    pixels = np.empty((n, height, width, 3), dtype=np.uint8)
    for i, caption in enumerate(captions):
        pixels[i] = COLOURS[caption.background]
        pixels[i, top : top + size_px, left : left + size_px] = np.asarray(
            draw(caption, size_px, rng)
        )
    masks = np.ones((n, height, width), dtype=np.float32)
    masks[:, top : top + size_px, left : left + size_px] = 0.0
    return captions, pixels, masks


def nine_channel_unet(base: Any) -> Any:
    """Return SD's inpainting UNet made from a txt2img UNet: the 5 new inputs start at zero."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**dict(base.config), "in_channels": 9})
    state = base.state_dict()
    weight = state["conv_in.weight"]
    widened = torch.zeros(weight.shape[0], 9, *weight.shape[2:], dtype=weight.dtype)
    widened[:, :4] = weight
    state["conv_in.weight"] = widened
    unet.load_state_dict(state)
    return unet


def train_inpaint(
    recipe: InpaintRecipe, base: Path, out: Path, progress: bool = True
) -> dict[str, Any]:
    """Train the twin from the txt2img folder `base`; save it (linking `base`'s VAE, text
    encoder and tokenizer when `out` sits beside it) with `training.json`."""
    import torch
    from diffusers import StableDiffusionPipeline
    from tqdm import tqdm

    from engine.demo.model import build_scheduler
    from engine.demo.train import ema_update, every, fused_optimizer, lr_factor

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    started = time.monotonic()
    source = StableDiffusionPipeline.from_pretrained(
        str(base), use_safetensors=True, dtype=torch.float32, safety_checker=None
    )
    vae, text_encoder, tokenizer = source.vae.eval(), source.text_encoder.eval(), source.tokenizer
    for part in (vae, text_encoder):
        part.requires_grad_(False)
    unet = nine_channel_unet(source.unet.float()).train()
    ema = copy.deepcopy(unet)
    optimizer = torch.optim.AdamW(
        unet.parameters(), lr=recipe.lr, weight_decay=0.01, fused=fused_optimizer("cpu")
    )
    alphas = build_scheduler().alphas_cumprod
    scaling = vae.config.scaling_factor
    rng = random.Random(recipe.seed + 10)
    generator = torch.Generator().manual_seed(recipe.seed + 11)
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc="inpaint", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * lr_factor(step, recipe.steps, recipe.warmup_steps)
        if step % recipe.outpaint_every == recipe.outpaint_every - 1:
            captions, pixels, drawn = outpaint_batch(rng, recipe.batch)
        else:
            size = recipe.sizes[step % len(recipe.sizes)]
            captions, pixels, drawn = inpaint_batch(rng, recipe.batch, size)
        x = torch.from_numpy(pixels.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
        masks = torch.from_numpy(drawn)[:, None]
        texts = ["" if rng.random() < recipe.cfg_dropout else c.text for c in captions]
        with torch.no_grad():
            x0 = vae.encode(x).latent_dist.mean * scaling
            kept = vae.encode(x * (1 - masks)).latent_dist.mean * scaling
            small = torch.nn.functional.interpolate(masks, size=x0.shape[-2:])
            ids = tokenizer(
                texts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            context = text_encoder(ids)[0]
        u = torch.rand(len(captions), generator=generator)
        t = (u.pow(recipe.t_power) * 1000).long().clamp(max=999)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        prediction = unet(torch.cat([noisy, small, kept], dim=1), t, context).sample
        loss = (prediction - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema_update(ema, unet, min(recipe.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    save_twin(vae, text_encoder, tokenizer, ema.eval(), base, out)
    record = {
        "recipe": asdict(recipe),
        "base": base.name,
        "minutes": round((time.monotonic() - started) / 60, 2),
        "torch": torch.__version__,
        "loss_every_50": every(losses, 50),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def save_twin(
    vae: Any, text_encoder: Any, tokenizer: Any, unet: Any, base: Path, out: Path
) -> None:
    """Save an inpainting pipeline folder; beside `base`, link its shared parts instead."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from engine.demo.model import build_scheduler

    pipe: Any = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    # float16 on disk, like the txt2img UNet; loaders cast it back to float32 on a CPU.
    unet.to(torch.float16).save_pretrained(str(out / "unet"), safe_serialization=True)
    write_defaults(out)
    if out.resolve().parent != base.resolve().parent:
        return
    for name in SHARED:
        shutil.rmtree(out / name)
        os.symlink(Path("..") / base.name / name, out / name, target_is_directory=True)


def load_inpaint_pipeline(folder: Path, device: str = "cpu") -> Any:
    """Load the twin exactly as the engine loads an inpainting model (safetensors, no checker)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        str(folder), use_safetensors=True, dtype=torch.float32, safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class Case:
    """One eval input: the picture (a drawn scene, or an outpaint canvas), its mask, the caption."""

    caption: Caption
    scene: np.ndarray  # uint8 HWC
    mask: np.ndarray  # float32 HW, 1 = paint
    kind: str  # "shape" (vary region), "zoom_2" or "right" (the engine's outpaint canvases)


def eval_cases(n: int, seed: int, size_px: int = 32) -> list[Case]:
    """`n` seen and `n` held-out scenes with the shape hidden (vary region), then `n` zoom-out
    2× and `n` pan-right canvases made by the engine's own `outpaint_canvas`; every attribute
    is named in the caption."""
    import io

    from engine.canvas import outpaint_canvas

    rng = random.Random(seed)
    cases = []
    for held_out in (False, True):
        for _ in range(n):
            caption = sample_caption(rng, held_out=held_out, full=True)
            scene = np.asarray(draw(caption, size_px, rng))
            cases.append(Case(caption, scene, random_mask(rng, caption, size_px, "shape"), "shape"))
    for move in ("zoom_2", "right"):
        for _ in range(n):
            caption = sample_caption(rng, full=True)
            buffer = io.BytesIO()
            draw(caption, size_px, rng).save(buffer, format="PNG")
            canvas = outpaint_canvas(buffer.getvalue(), move)
            with Image.open(io.BytesIO(canvas.image_png)) as image:
                picture = np.asarray(image.convert("RGB"))
            with Image.open(io.BytesIO(canvas.mask_png)) as mask:
                painted = (np.asarray(mask.convert("L"), dtype=np.float32) >= 128).astype(
                    np.float32
                )
            cases.append(Case(caption, picture, painted, move))
    return cases


def run_cases(pipe: Any, cases: list[Case], seed: int, steps: int, guidance: float) -> list[Any]:
    """Inpaint every case (one generator per image, seed + index), in batches of one size."""
    import torch

    out: list[np.ndarray] = []
    start = 0
    while start < len(cases):
        shape = cases[start].scene.shape
        end = start
        while end < len(cases) and end - start < 16 and cases[end].scene.shape == shape:
            end += 1
        chunk = cases[start:end]
        images = pipe(
            [c.caption.text for c in chunk],
            image=[Image.fromarray(c.scene) for c in chunk],
            mask_image=[Image.fromarray((c.mask * 255).astype(np.uint8)) for c in chunk],
            num_inference_steps=steps,
            guidance_scale=guidance,
            strength=1.0,
            generator=[torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))],
            height=shape[0],
            width=shape[1],
            output_type="np",
        ).images
        out += [np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8) for image in images]
        start = end
    return out


def evaluate_inpaint(
    pipe: Any,
    n: int = 100,
    seed: int = 4321,
    sheet: Path | None = None,
    guidance: float = GUIDANCE,
    steps: int = STEPS,
) -> dict[str, Any]:
    """Vary region: read the filled shapes back, as the txt2img eval reads whole images. Zoom
    out and pan: the share of new pixels drawn in the caption's background colour. All: how much
    the kept pixels moved (mean absolute difference of 255), as the model left them and after
    the engine puts them back (`keep_unmasked`)."""
    cases = eval_cases(n, seed)
    images = run_cases(pipe, cases, seed, steps, guidance)
    pairs = list(zip(cases, images, strict=True))
    groups = {
        "seen": [p for p in pairs if p[0].kind == "shape" and not p[0].caption.is_held_out],
        "held_out": [p for p in pairs if p[0].kind == "shape" and p[0].caption.is_held_out],
        "zoom_2": [p for p in pairs if p[0].kind == "zoom_2"],
        "pan_right": [p for p in pairs if p[0].kind == "right"],
    }
    result: dict[str, Any] = {"n": n, "seed": seed, "steps": steps, "guidance": guidance}
    for name, chosen in groups.items():
        result[name] = {**_readings(chosen), **_kept(chosen)}
    if sheet is not None:
        picked = [pairs[i] for g in range(4) for i in range(g * n, g * n + min(n, 6))]
        inpaint_sheet(picked).save(sheet)
    return result


def _readings(chosen: list[tuple[Case, np.ndarray]]) -> dict[str, float]:
    from engine.demo.classify import NAMES, nearest_colours

    if chosen[0][0].kind != "shape":
        shares = []
        for case, image in chosen:
            names = np.array(NAMES)[nearest_colours(image)]
            shares.append(float((names[case.mask >= 0.5] == case.caption.background).mean()))
        return {"new_area_background": round(statistics.mean(shares), 4)}
    readings = [read_image(image) for _, image in chosen]
    result = {}
    for name in ATTRIBUTES:
        pairs = zip(chosen, readings, strict=True)
        hits = [getattr(r, name) == getattr(c.caption, name) for (c, _), r in pairs]
        result[name] = round(sum(hits) / len(hits), 4)
    return result


def _kept(chosen: list[tuple[Case, np.ndarray]]) -> dict[str, float]:
    from engine.pipeline import keep_unmasked

    raw, kept = [], []
    for case, image in chosen:
        outside = case.mask < 0.5
        scene = case.scene.astype(np.float32)
        raw.append(float(np.abs(image.astype(np.float32) - scene)[outside].mean()))
        mask = Image.fromarray((case.mask * 255).astype(np.uint8))
        pasted = keep_unmasked(
            image[None].astype(np.float32) / 255.0, [Image.fromarray(case.scene)], [mask]
        )
        back = np.clip(pasted[0] * 255 + 0.5, 0, 255).astype(np.uint8).astype(np.float32)
        kept.append(float(np.abs(back - scene)[outside].mean()))
    return {
        "kept_mad_raw": round(statistics.mean(raw), 2),
        "kept_mad_raw_max": round(max(raw), 2),
        "kept_mad_pasted": round(statistics.mean(kept), 2),
        "kept_mad_pasted_max": round(max(kept), 2),
    }


def inpaint_sheet(pairs: list[tuple[Case, np.ndarray]], tile: int = 96) -> Image.Image:
    """Rows of before / mask / after, one row per case, captions under them."""
    label = 14
    width = max(case.scene.shape[1] for case, _ in pairs)
    scale = tile / 32
    column = round(width * scale) + 6
    height = max(case.scene.shape[0] for case, _ in pairs)
    row_h = round(height * scale) + label + 6
    sheet = Image.new("RGB", (3 * column + 8, len(pairs) * row_h + 8), "white")
    pen = ImageDraw.Draw(sheet)
    for row, (case, image) in enumerate(pairs):
        y = 8 + row * row_h
        mask = Image.fromarray((case.mask * 255).astype(np.uint8)).convert("RGB")
        for col, part in enumerate((Image.fromarray(case.scene), mask, Image.fromarray(image))):
            size = (round(part.width * scale), round(part.height * scale))
            sheet.paste(part.resize(size, Image.Resampling.NEAREST), (8 + col * column, y))
        words = case.caption.text.removeprefix("a ").replace(" background", "")
        pen.text((8, y + round(case.scene.shape[0] * scale) + 1), f"{case.kind}: {words}", fill=0)
    return sheet


def twin_bytes(folder: Path = INPAINT_DIR) -> int:
    """Return the bytes the twin adds (its own files; the linked parts are the txt2img model's)."""
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
