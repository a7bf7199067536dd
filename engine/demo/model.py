"""The demo model's parts: a tiny Stable Diffusion 2 (v-prediction, linear projections).

Image 32 px → VAE (factor 4) → latent 4×8×8; CLIP text encoder over a caption-word vocabulary.
Cross-attention at every UNet level, the latent's own 8×8 included: without it at full latent
resolution (tried: 16×16 and 32×32 latents attending only at 8×8 and below) shape stayed at
chance, because the shape word could not reach the level that draws the outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_TOKENS = 24
# Few groups: with one channel per group, GroupNorm erases a flat colour's level entirely.
NORM_GROUPS = 8


@dataclass(frozen=True)
class Shape:
    """Sizes of the parts; the defaults are the shipped model's."""

    image_px: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)
    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_attention: tuple[bool, ...] = (True, True, True)
    unet_layers: int = 1
    unet_heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4


def build_tokenizer(folder: Path) -> Any:
    """A CLIP tokenizer over the caption vocabulary written into `folder`."""
    from transformers import CLIPTokenizer

    from engine.demo.vocab import write_tokenizer_files

    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def build_vae(shape: Shape) -> Any:
    """An AutoencoderKL halving the side once per extra block: 3 blocks make 3×32×32 ↔ 4×8×8."""
    from diffusers import AutoencoderKL

    n = len(shape.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=shape.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=NORM_GROUPS,
        sample_size=shape.image_px,
    )


def vae_factor(shape: Shape) -> int:
    """How many image pixels one latent pixel covers along a side."""
    return int(2 ** (len(shape.vae_channels) - 1))


def build_text_encoder(shape: Shape, tokenizer: Any) -> Any:
    """A small CLIP text transformer, saved as float32 (transformers loads the saved dtype)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.text_width,
        intermediate_size=shape.text_width * 4,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        max_position_embeddings=MAX_TOKENS,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=shape.text_width,
        dtype=torch.float32,
    )
    return CLIPTextModel(config).float()


def build_unet(shape: Shape) -> Any:
    """A UNet with cross-attention (where `unet_attention` says) and SD 2's linear projections."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=shape.image_px // vae_factor(shape),
        in_channels=4,
        out_channels=4,
        down_block_types=tuple(
            "CrossAttnDownBlock2D" if a else "DownBlock2D" for a in shape.unet_attention
        ),
        up_block_types=tuple(
            "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(shape.unet_attention)
        ),
        block_out_channels=shape.unet_channels,
        layers_per_block=shape.unet_layers,
        cross_attention_dim=shape.text_width,
        attention_head_dim=shape.unet_heads,
        use_linear_projection=True,
        norm_num_groups=NORM_GROUPS,
    )


def build_scheduler() -> Any:
    """SD 2.1's noise schedule with v-prediction; DPM++ 2M, trailing steps, for sampling."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        algorithm_type="dpmsolver++",
        solver_order=2,
        steps_offset=1,
    )
