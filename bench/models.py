"""Build the full-size SD 2.1 architecture with random weights, saved as a diffusers folder.

Same shapes, FLOPs and memory as stabilityai/stable-diffusion-2-1: UNet 320/640/1280/1280 with
5/10/20/20 attention heads, cross-attention 1024, linear projection, upcast attention,
v-prediction; an OpenCLIP-H-sized text encoder (hidden 1024, 23 layers, 16 heads, MLP 4096);
the SD VAE (128/256/512/512). The engine loads the folder exactly as it loads SD 2.1. The
tokenizer is character-level (no vocabulary file can be downloaded here); prompts then take a
few more tokens, which costs nothing: CLIP always runs on 77 positions.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

# Outside the repository: the full-size model is 5.2 GB (float32) and must never be committed.
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/imagine-bench-cache"))


@dataclass(frozen=True)
class Shape:
    """The sizes that differ between the real architecture and a dry-run miniature."""

    blocks: tuple[int, ...] = (320, 640, 1280, 1280)
    heads: tuple[int, ...] = (5, 10, 20, 20)
    cross_dim: int = 1024
    text_layers: int = 23
    text_heads: int = 16
    text_mlp: int = 4096
    vae_blocks: tuple[int, ...] = (128, 256, 512, 512)
    norm_groups: int = 32
    native_px: int = 768
    vocab: int = 49408

    @property
    def name(self) -> str:
        """Return a folder name that changes whenever the shape does."""
        digest = zlib.crc32(json.dumps(asdict(self)).encode())
        return "sd21-random" if self == SD21 else f"shape-{digest:08x}"


SD21 = Shape()
# A miniature with the same layout, for CPU dry runs of the GPU script.
MINI = Shape(
    blocks=(32, 32, 64, 64),
    heads=(2, 2, 4, 4),
    cross_dim=64,
    text_layers=2,
    text_heads=4,
    text_mlp=128,
    vae_blocks=(16, 16, 32, 32),
    norm_groups=8,
    native_px=64,
    vocab=1000,
)


def folder_for(shape: Shape, dtype: str = "float32") -> Path:
    """Return the cache folder that holds (or will hold) a built model."""
    return CACHE / f"{shape.name}-{dtype}"


def ensure(shape: Shape = SD21, dtype: str = "float32", device: str = "cpu") -> Path:
    """Build the model once into the cache; return its folder."""
    folder = folder_for(shape, dtype)
    marker = folder / "bench-shape.json"
    if marker.exists() and json.loads(marker.read_text()) == asdict(shape):
        return folder
    build(folder, shape, dtype, device)
    marker.write_text(json.dumps(asdict(shape)))
    return folder


def build(folder: Path, shape: Shape, dtype: str = "float32", device: str = "cpu") -> Path:
    """Build the pipeline with random weights (on `device`, fast on a GPU) and save it."""
    import torch
    from diffusers import StableDiffusionPipeline

    from engine.tinymodel import char_vocabulary

    torch.manual_seed(0)
    with torch.device(device):
        unet, vae, text_encoder = _unet(shape), _vae(shape), None
        tokenizer = _tokenizer(char_vocabulary())
        text_encoder = _text_encoder(shape, tokenizer)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _unet(shape: Shape):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=shape.native_px // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=shape.blocks,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=shape.cross_dim,
        attention_head_dim=shape.heads,
        use_linear_projection=True,
        upcast_attention=True,
        norm_num_groups=shape.norm_groups,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def _vae(shape: Shape):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=shape.vae_blocks,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=shape.norm_groups,
        sample_size=shape.native_px,
    )


def _tokenizer(vocabulary: dict[str, int]):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=vocabulary, merges=[], model_max_length=77)


def _text_encoder(shape: Shape, tokenizer):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(shape.vocab, len(tokenizer)),
            hidden_size=shape.cross_dim,
            intermediate_size=shape.text_mlp,
            num_attention_heads=shape.text_heads,
            num_hidden_layers=shape.text_layers,
            max_position_embeddings=77,
            projection_dim=shape.cross_dim,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def _scheduler():  # type: ignore[no-untyped-def]
    from engine.tinymodel import sd2_scheduler

    return sd2_scheduler()


def parameter_counts(folder: Path) -> dict[str, int]:
    """Return parameters per component, read from the safetensors headers."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for part in ("unet", "text_encoder", "vae"):
        total = 0
        for path in sorted((folder / part).glob("*.safetensors")):
            with safe_open(str(path), "np") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    total += int(_numel(handle.get_slice(key).get_shape()))
        counts[part] = total
    return counts


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count
