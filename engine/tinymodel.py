"""Build tiny SD-2-shaped pipelines offline (random weights) for tests and a first start.

Same layout as SD 2.1 — UNet with cross-attention and linear projection, v-prediction,
AutoencoderKL, CLIP text encoder and tokenizer — saved with `save_pretrained` so it loads
through exactly the code path SD 2.1 does. `build` makes the txt2img model; `build_inpaint`
makes its inpainting twin (9-channel UNet), which loads as SD 2's inpainting weights do.
Their images are noise. Called by pipeline.py, and by tests for their fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte → printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def char_vocabulary() -> dict[str, int]:
    """Return a character-level CLIP vocabulary (every byte, alone and word-final)."""
    chars = _bytes_to_unicode()
    tokens = [*chars, *(c + "</w>" for c in chars), *SPECIAL]
    return {token: index for index, token in enumerate(tokens)}


def sd2_scheduler() -> DDIMScheduler:
    """Return SD 2.1's own scheduler config (v-prediction); runs swap in DPM++ 2M from it."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )


def build(folder: Path, seed: int = 0) -> Path:
    """Build and save the tiny txt2img pipeline into `folder` (native size 32 px); return it."""
    return _save(StableDiffusionPipeline(**_components(seed, unet_in_channels=4)), folder)


def build_inpaint(folder: Path, seed: int = 0) -> Path:
    """Build and save the tiny inpainting pipeline into `folder`; return the folder.

    Its UNet reads 9 channels (4 latent + 1 mask + 4 masked-image latents), the layout of
    stabilityai/stable-diffusion-2-inpainting, so it loads as StableDiffusionInpaintPipeline.
    """
    return _save(StableDiffusionInpaintPipeline(**_components(seed, unet_in_channels=9)), folder)


def _save(pipe: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _components(seed: int, unet_in_channels: int) -> dict[str, Any]:
    """Return the pipeline's components, seeded; built in a fixed order so weights repeat.

    Long because it spells out every component's config, like SD 2.1's own model_index.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=unet_in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    tokenizer = CLIPTokenizer(vocab=char_vocabulary(), merges=[], model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": sd2_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def build_lora(
    model_folder: Path,
    path: Path,
    seed: int = 1,
    rank: int = 4,
    block_out_channels: tuple[int, int] | None = None,
) -> Path:
    """Build a LoRA for the tiny model's UNet and save it as diffusers writes LoRAs; return it.

    peft's `LoraConfig` on the attention projections, `lora_B` random (peft starts it at
    zero, which would change nothing). `block_out_channels` other than the model's gives a
    LoRA of the wrong shapes.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    if block_out_channels is None:
        unet = UNet2DConditionModel.from_pretrained(model_folder / "unet")
    else:
        config = dict(UNet2DConditionModel.load_config(model_folder / "unet"))
        config["block_out_channels"] = block_out_channels
        unet = UNet2DConditionModel.from_config(config)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=path.name
    )
    return path
