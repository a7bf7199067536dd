"""Train the demo model: first the VAE, then the text encoder and UNet together.

The denoiser's loss is SD 2.1's v-prediction loss, weighted across timesteps (see `loss_weights`):
layout (position) is decided at high noise and shape detail at middle noise, so the weighting
must keep both. Timesteps are drawn as 1000·u^`t_power`: below 1 more of them are noisy, where
the model binds "top" and "bottom" to a place (measured, n = 100: position 80 % → 100 % at
0.75, shape unchanged). The VAE learns to decode slightly jittered latents
(`vae_latent_noise`), so the denoiser's small errors still decode to clean outlines (n = 100:
shape kind 85 % → 97 %). Everything is drawn from one seed, so a run is reproducible on the
same machine.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.demo.dataset import draw_batch
from engine.demo.model import (
    Shape,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    vae_factor,
)

BASE_MINUTES = 26.0


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run. The defaults are the shipped model's."""

    seed: int = 0
    shape: Shape = field(default_factory=Shape)
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_shape_weight: float = 0.9
    vae_latent_noise: float = 0.15
    vae_thumbnail_weight: float = 1.0
    # Which scenes the autoencoder learns from: "all" 24 colour–shape pairs (it reads no captions,
    # as SD's VAE learnt from images alone; the UNet's scenes and captions stay seen-only), or
    # "seen" pairs only, which redrew 19 % of held-out shapes as another shape.
    vae_pairs: str = "all"
    bank_size: int = 24576
    steps: int = 4000
    batch: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 100
    cfg_dropout: float = 0.1
    weighting: str = "v"
    snr_gamma: float = 5.0
    t_power: float = 0.75
    ema_decay: float = 0.995
    # The text encoder's learning rate as a share of `lr`; 0 keeps it at its random start, as
    # SD keeps CLIP frozen (trained jointly, it binds colour to shape and held-out pairs fail).
    text_lr_scale: float = 0.0
    # A VAE folder to reuse instead of training one (e.g. engine/demo/model/vae); "" trains it.
    vae_from: str = ""
    threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.vae_pairs not in ("seen", "all"):
            raise ValueError(f"vae_pairs: expected 'seen' or 'all', got {self.vae_pairs!r}")

    def scaled(self, minutes: float) -> Recipe:
        """The same recipe with step counts scaled to a time budget (defaults: 26 min, 2 cores)."""
        factor = minutes / BASE_MINUTES
        return replace(
            self,
            vae_steps=max(10, round(self.vae_steps * factor)),
            steps=max(10, round(self.steps * factor)),
            bank_size=max(256, min(self.bank_size, round(self.bank_size * factor))),
        )

    def with_settings(self, settings: list[str]) -> Recipe:
        """The recipe with `name=value` overrides (numbers, words, or comma lists for shapes)."""
        changes: dict[str, Any] = {}
        shape_changes: dict[str, Any] = {}
        for setting in settings:
            name, sep, text = setting.partition("=")
            name = name.strip()
            target = self.shape if hasattr(self.shape, name) else self
            if not sep or not hasattr(target, name) or name == "shape":
                raise ValueError(f"--set {setting!r}: expected name=value with a recipe field name")
            try:
                value = _setting_value(getattr(target, name), text)
            except ValueError:
                raise ValueError(
                    f"--set {setting!r}: expected a value like {getattr(target, name)!r}"
                ) from None
            (shape_changes if target is self.shape else changes)[name] = value
        return replace(self, shape=replace(self.shape, **shape_changes), **changes)


def _setting_value(current: Any, text: str) -> Any:
    """Read `text` as a value of the same kind as `current` (bool, int, float, str, tuple)."""
    if isinstance(current, tuple):
        return tuple(_setting_value(current[0], item.strip()) for item in text.split(","))
    if isinstance(current, bool):
        return text.strip().lower() in ("1", "true", "yes")
    return type(current)(text)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def loss_weights(snr: Any, weighting: str, gamma: float) -> Any:
    """Per-sample weights on the v-prediction MSE.

    "v": plain v loss (SD 2.1). "minsnr": min-SNR-γ, which starves the high-noise steps where
    layout is decided. "clamp": only the low-noise side clamped — an x0 weight of min(SNR + 1, γ)
    instead of min-SNR's min(SNR, γ) — so high-noise steps keep the full weight.
    """
    import torch

    if weighting == "v":
        return torch.ones_like(snr)
    if weighting == "minsnr":
        return torch.clamp(snr, max=gamma) / (snr + 1)
    if weighting == "clamp":
        return torch.clamp(snr + 1, max=gamma) / (snr + 1)
    raise ValueError(f"unknown weighting {weighting!r}")


def phase_weighting(weighting: str, step: int, total: int) -> str:
    """Pick the weighting for this step: "v>minsnr@0.75" switches after 75 % of the steps."""
    if ">" not in weighting:
        return weighting
    first, rest = weighting.split(">")
    second, at = rest.split("@")
    return first if step < float(at) * total else second


def fused_optimizer(device: str) -> bool:
    """Whether Adam runs as one fused kernel (same rule; `bench demo`: 0.92-1.02x the step time)."""
    return device.split(":")[0] in ("cpu", "cuda")


def train_vae(recipe: Recipe, progress: bool = True) -> tuple[Any, list[float]]:
    """Train the autoencoder on drawn scenes, as a plain (deterministic) autoencoder.

    Two things make it learn in minutes rather than hours: in the L1 loss each image's shape
    pixels together weigh `vae_shape_weight` times the whole image, whatever the shape's size
    (so a small star counts as much as a large one), and three latent channels are pulled
    towards the block-averaged RGB image (one block per latent pixel) early on (the pull fades
    to 2 % by 60 % of the steps), so the decoder gets useful latents from the first steps.
    `vae_latent_noise` (a share of the latents' spread) jitters the latents the decoder sees,
    so it draws clean outlines from the slightly-off latents a denoiser makes. Afterwards the
    posterior's variance is pinned near zero.
    """
    import torch
    from tqdm import tqdm

    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    vae = build_vae(recipe.shape).to(recipe.device)
    optimizer = torch.optim.Adam(
        vae.parameters(), lr=recipe.vae_lr, fused=fused_optimizer(recipe.device)
    )
    losses: list[float] = []
    bar = tqdm(range(recipe.vae_steps), desc="vae", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = recipe.vae_lr * lr_factor(step, recipe.vae_steps, 30)
        _, pixels = draw_batch(
            rng, recipe.vae_batch, recipe.shape.image_px, any_pair=recipe.vae_pairs == "all"
        )
        x = torch.from_numpy(pixels).to(recipe.device)
        z = vae.encode(x).latent_dist.mean
        if recipe.vae_latent_noise:
            jitter = torch.randn_like(z) * z.detach().std() * recipe.vae_latent_noise
            recon = vae.decode(z + jitter).sample
        else:
            recon = vae.decode(z).sample
        is_shape = ((x - x[:, :, :1, :1]).abs().sum(dim=1, keepdim=True) > 0.1).float()
        share = is_shape.mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)
        weight = 1 + recipe.vae_shape_weight * is_shape / share
        loss = (weight * (recon - x).abs()).mean() / weight.mean()
        pull = recipe.vae_thumbnail_weight * max(0.02, 1 - step / (0.6 * recipe.vae_steps))
        thumbnail = torch.nn.functional.avg_pool2d(x, vae_factor(recipe.shape))
        loss = loss + pull * (z[:, :3] - thumbnail).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
    pin_variance(vae)
    return vae.eval(), losses


def pin_variance(vae: Any) -> None:
    """Make the posterior's log-variance a constant −20, so sampling it (img2img) adds no noise."""
    import torch

    half = vae.quant_conv.out_channels // 2
    with torch.no_grad():
        vae.quant_conv.weight[half:] = 0
        vae.quant_conv.bias[half:] = -20.0


def encode_bank(vae: Any, recipe: Recipe) -> tuple[list[str], Any]:
    """Draw a fixed bank of scenes and encode them once; sets the VAE's scaling factor."""
    import torch

    rng = random.Random(recipe.seed + 1)
    texts: list[str] = []
    latents = []
    with torch.no_grad():
        for start in range(0, recipe.bank_size, 256):
            batch_texts, pixels = draw_batch(
                rng, min(256, recipe.bank_size - start), recipe.shape.image_px
            )
            x = torch.from_numpy(pixels).to(recipe.device)
            latents.append(vae.encode(x).latent_dist.mean)
            texts += batch_texts
    bank = torch.cat(latents)
    scaling = float(1.0 / bank.std())
    vae.register_to_config(scaling_factor=scaling)
    return texts, bank * scaling


def ema_update(ema: Any, model: Any, decay: float) -> None:
    """Move the averaged copy a step towards the trained weights."""
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def train_denoiser(
    recipe: Recipe, tokenizer: Any, texts: list[str], bank: Any, progress: bool = True
) -> tuple[Any, Any, list[float]]:
    """Train text encoder and UNet jointly on the latent bank; returns their EMA copies."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(recipe.seed + 2)
    rng = random.Random(recipe.seed + 2)
    device = recipe.device
    text_encoder = build_text_encoder(recipe.shape, tokenizer).to(device)
    unet = build_unet(recipe.shape).to(device)
    ema_text, ema_unet = copy.deepcopy(text_encoder), copy.deepcopy(unet)
    train_text = recipe.text_lr_scale > 0
    text_encoder.requires_grad_(train_text)
    params = [*unet.parameters(), *(text_encoder.parameters() if train_text else [])]
    groups = [{"params": list(unet.parameters()), "scale": 1.0}]
    if train_text:
        groups.append({"params": list(text_encoder.parameters()), "scale": recipe.text_lr_scale})
    optimizer = torch.optim.AdamW(
        groups, lr=recipe.lr, weight_decay=0.01, fused=fused_optimizer(device)
    )
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.to(device)
    generator = torch.Generator(device).manual_seed(recipe.seed + 3)
    tokens = tokenizer(
        ["", *texts],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    losses: list[float] = []
    bar = tqdm(range(recipe.steps), desc="unet", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            factor = lr_factor(step, recipe.steps, recipe.warmup_steps)
            group["lr"] = recipe.lr * group["scale"] * factor
        index = [rng.randrange(len(texts)) for _ in range(recipe.batch)]
        # Row 0 of `tokens` is the empty caption: the unconditional input for guidance.
        rows = [0 if rng.random() < recipe.cfg_dropout else i + 1 for i in index]
        ids = tokens[torch.tensor(rows, device=device)]
        x0 = bank[torch.tensor(index, device=device)]
        u = torch.rand(recipe.batch, generator=generator, device=device)
        t = (u.pow(recipe.t_power) * 1000).long().clamp(max=999)
        noise = torch.randn(x0.shape, generator=generator, device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        with torch.set_grad_enabled(train_text):
            states = text_encoder(ids)[0]
        prediction = unet(noisy, t, states).sample
        snr = alphas[t] / (1 - alphas[t])
        weighting = phase_weighting(recipe.weighting, step, recipe.steps)
        weights = loss_weights(snr, weighting, recipe.snr_gamma)
        loss = (weights * (prediction - target).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        if train_text:
            ema_update(ema_text, text_encoder, decay)
        ema_update(ema_unet, unet, decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return ema_text.eval(), ema_unet.eval(), losses


def assemble(vae: Any, text_encoder: Any, tokenizer: Any, unet: Any) -> Any:
    """Put the parts into a standard StableDiffusionPipeline (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae.to("cpu"),
        text_encoder=text_encoder.to("cpu"),
        tokenizer=tokenizer,
        unet=unet.to("cpu"),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def every(values: list[float], n: int) -> list[float]:
    """Means of consecutive chunks of `n` values, rounded for the record."""
    return [
        round(sum(values[i : i + n]) / len(values[i : i + n]), 5) for i in range(0, len(values), n)
    ]


def train(recipe: Recipe, out: Path, progress: bool = True) -> dict[str, Any]:
    """Run the whole recipe and save the pipeline and `training.json` into `out`."""
    import torch

    torch.set_num_threads(recipe.threads)
    started = time.monotonic()
    tokenizer = build_tokenizer(out / "_vocab")
    vae_losses: list[float] = []
    if recipe.vae_from:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(recipe.vae_from).to(recipe.device).eval()
    else:
        vae, vae_losses = train_vae(recipe, progress)
    vae_s = time.monotonic() - started
    texts, bank = encode_bank(vae, recipe)
    text_encoder, unet, losses = train_denoiser(recipe, tokenizer, texts, bank, progress)
    pipe = assemble(vae, text_encoder, tokenizer, unet)
    pipe.save_pretrained(str(out), safe_serialization=True)
    # The UNet is stored in float16 to keep the shipped folder under 20 MB; loaders cast it
    # back (the engine and the eval load with dtype=float32 on a CPU).
    unet.to(torch.float16).save_pretrained(str(out / "unet"), safe_serialization=True)
    for leftover in (out / "_vocab").iterdir():
        leftover.unlink()
    (out / "_vocab").rmdir()
    record = {
        "recipe": asdict(recipe),
        "minutes": round((time.monotonic() - started) / 60, 2),
        "vae_minutes": round(vae_s / 60, 2),
        "torch": torch.__version__,
        "vae_scaling_factor": vae.config.scaling_factor,
        "vae_loss_every_20": every(vae_losses, 20),
        "loss_every_50": every(losses, 50),
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    from engine.demo.evaluate import write_defaults

    write_defaults(out)
    return record
