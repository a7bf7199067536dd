"""The diffusers pipeline: load SD 2.1 (or any SD folder), run batches on the worker thread.

The only engine module that imports torch or diffusers (tinymodel.py is called from here).
Everything here runs on the engine's single GPU worker thread: CUDA contexts and diffusers
schedulers are not thread-safe.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()  # import-time notices (torchvision absent) are not ours
hf_logging.disable_progress_bar()

from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from PIL import Image  # noqa: E402

from engine.config import BUILTIN_DEMO, BUILTIN_TINY, EngineSettings  # noqa: E402
from engine.errors import GenerationFailed, ModelUnavailable, OutOfMemory  # noqa: E402

log = logging.getLogger(__name__)
diffusers_logging.disable_progress_bar()

DEMO_FOLDER = Path(__file__).parent / "demo" / "model"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")

# Linear map from SD's 4 latent channels to RGB: a cheap preview with no VAE call.
LATENT_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)


@dataclass(frozen=True)
class BatchItem:
    """One job's part of a pipeline call: its prompt and one seed per image."""

    job_id: str
    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    init_image: Image.Image | None = None


@dataclass(frozen=True)
class Batch:
    """Jobs that agree on everything but prompt and seed, run as one pipeline call."""

    kind: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    items: tuple[BatchItem, ...]
    strength: float = 1.0

    @property
    def image_count(self) -> int:
        """Return how many images the call makes."""
        return sum(len(item.seeds) for item in self.items)


@dataclass
class GeneratedImage:
    """One output image and the safety checker's verdict (None when no checker runs)."""

    image: Image.Image
    is_flagged: bool | None = None


@dataclass
class RunStats:
    """What one call cost; read by the engine for ETA and metrics."""

    seconds: float = 0.0
    steps: int = 0
    retries: list[str] = field(default_factory=list)


StepCallback = Callable[[int, int, Callable[[], Image.Image] | None], None]
StopCheck = Callable[[], bool]


class Interrupted(Exception):
    """Raised inside the step callback to abort a call without the VAE decode."""


class Pipeline:
    """Owns the model on one device; every method runs on the worker thread."""

    def __init__(self, settings: EngineSettings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.model_name = settings.model
        self.device = "cpu"
        self.dtype = torch.float32
        self.is_builtin_noise = False
        self.is_demo = False
        self._txt2img: Any = None  # diffusers' lazy modules defeat static typing
        self._img2img: Any = None
        self._safety: tuple[Any, Any] | None = None
        self._is_memory_saving = False

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load weights (safetensors only) onto the device; raise ModelUnavailable."""
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        self.device = _pick_device(self.settings.device)
        self.dtype = _pick_dtype(self.settings.dtype, self.device)
        source = self._resolve_source()
        pipe = self._from_source(source)
        pipe.set_progress_bar_config(disable=True)
        self._place(pipe)
        self._txt2img = pipe
        self._img2img = StableDiffusionImg2ImgPipeline(
            **pipe.components, requires_safety_checker=False
        )
        self._img2img.set_progress_bar_config(disable=True)
        if self.settings.safety_checker:
            self._safety = self._load_safety_checker(self.settings.safety_checker)
        log.info(
            "model %s loaded on %s (%s), native size %d px",
            self.model_name,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.native_px,
        )

    def _resolve_source(self) -> str:
        model = self.settings.model
        if model == BUILTIN_DEMO and (DEMO_FOLDER / "model_index.json").exists():
            self.is_demo = True
            self.model_name = "imagine-demo"
            return str(DEMO_FOLDER)
        if model in (BUILTIN_DEMO, BUILTIN_TINY):
            from engine import tinymodel

            folder = self.data_dir / "models" / "tiny"
            if not (folder / "model_index.json").exists():
                log.info("building the tiny offline model in %s (random weights)", folder)
                tinymodel.build(folder)
            self.is_builtin_noise = True
            self.model_name = "imagine-tiny-random"
            return str(folder)
        return model

    def _from_source(self, source: str) -> Any:
        path = Path(source).expanduser()
        common: dict[str, Any] = {"dtype": self.dtype, "safety_checker": None}
        common["requires_safety_checker"] = False
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelUnavailable(
                source,
                "pickle checkpoints can run arbitrary code and are never loaded",
                "Convert it to .safetensors, or use a diffusers folder or hub id.",
            )
        try:
            if path.is_file() and path.suffix.lower() == ".safetensors":
                return StableDiffusionPipeline.from_single_file(
                    str(path), local_files_only=self.settings.offline, **common
                )
            if path.is_dir():
                _require_safetensors(path, source)
                return StableDiffusionPipeline.from_pretrained(
                    str(path), use_safetensors=True, local_files_only=True, **common
                )
            if path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
                raise ModelUnavailable(
                    source, "no such file or folder", "Check engine.model in config.toml."
                )
            return StableDiffusionPipeline.from_pretrained(
                source, use_safetensors=True, local_files_only=self.settings.offline, **common
            )
        except ModelUnavailable:
            raise
        except (OSError, ValueError) as error:
            raise ModelUnavailable(source, _first_line(error), _hub_hint(source)) from error

    def _place(self, pipe: Any) -> None:
        settings = self.settings
        if settings.cpu_offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        if settings.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
        if settings.compile:
            pipe.unet = torch.compile(pipe.unet)

    def _load_safety_checker(self, source: str) -> tuple[Any, Any]:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPImageProcessor

        try:
            checker: Any = StableDiffusionSafetyChecker.from_pretrained(
                source, use_safetensors=True, local_files_only=self.settings.offline
            )
            try:
                processor = CLIPImageProcessor.from_pretrained(
                    source, local_files_only=self.settings.offline
                )
            except OSError:
                processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224)
        except (OSError, ValueError) as error:
            raise ModelUnavailable(source, _first_line(error), _hub_hint(source)) from error
        checker.to(self.device, dtype=self.dtype)
        return checker, processor

    # -- facts -----------------------------------------------------------------------------

    @property
    def native_px(self) -> int:
        """Return the model's native image size (768 for SD 2.1)."""
        pipe = self._pipe()
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    @property
    def dtype_name(self) -> str:
        """Return the dtype as text (float16, float32...)."""
        return str(self.dtype).removeprefix("torch.")

    def token_count(self, text: str) -> int:
        """Return how many CLIP tokens a prompt takes (77 is the most the encoder sees)."""
        return len(self._pipe().tokenizer(text, truncation=False).input_ids)

    def _pipe(self) -> Any:
        if self._txt2img is None:
            raise RuntimeError("pipeline not loaded")
        return self._txt2img

    # -- running ---------------------------------------------------------------------------

    def run(
        self, batch: Batch, on_step: StepCallback, should_stop: StopCheck
    ) -> list[list[GeneratedImage]]:
        """Run one batch; return images per item. Raise Interrupted, OutOfMemory, GenerationFailed.

        Out of memory: free memory outside the except block, retry once with attention slicing
        and VAE tiling. A NaN or all-black result is retried once with the VAE in float32.
        """
        self._note_truncation(batch)
        arrays = self._call_oom_guarded(batch, on_step, should_stop)
        if arrays is None:
            # Freed here, not inside `except`: the traceback there still holds the tensors.
            self._free_memory()
            if self._is_memory_saving:
                raise OutOfMemory("out of memory even with attention slicing and VAE tiling")
            log.warning("out of memory; retrying once with attention slicing and VAE tiling")
            self._enable_memory_saving()
            arrays = self._call_oom_guarded(batch, on_step, should_stop)
            if arrays is None:
                self._free_memory()
                raise OutOfMemory("out of memory even with attention slicing and VAE tiling")
        if _has_bad_images(arrays):
            log.warning("NaN or black image; retrying once with the VAE in float32")
            arrays = self._call(batch, on_step, should_stop, upcast=True)
            if _has_bad_images(arrays):
                raise GenerationFailed("the model produced a NaN or black image twice")
        return self._package(batch, arrays)

    def _call_oom_guarded(
        self, batch: Batch, on_step: StepCallback, should_stop: StopCheck
    ) -> np.ndarray | None:
        """Return the images, or None when the device ran out of memory."""
        try:
            return self._call(batch, on_step, should_stop, upcast=False)
        except torch.OutOfMemoryError:
            return None
        except RuntimeError as error:
            if _is_oom_message(error):
                return None
            raise

    def _call(
        self, batch: Batch, on_step: StepCallback, should_stop: StopCheck, upcast: bool
    ) -> np.ndarray:
        base = self._pipe() if batch.kind == "txt2img" else self._img2img
        assert base is not None
        # A shallow copy per call: its own scheduler and call state, the same weights. A worker
        # thread abandoned by the watchdog can never share a scheduler with its successor.
        pipe = copy.copy(base)
        pipe.scheduler = make_scheduler(batch.scheduler, base.scheduler.config)
        prompts, negatives, generators, inits = [], [], [], []
        for item in batch.items:
            for seed in item.seeds:
                prompts.append(item.prompt)
                negatives.append(item.negative_prompt)
                generators.append(torch.Generator("cpu").manual_seed(seed))
                if item.init_image is not None:
                    inits.append(item.init_image.convert("RGB").resize((batch.width, batch.height)))
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "negative_prompt": negatives if any(negatives) else None,
            "num_inference_steps": batch.steps,
            "guidance_scale": batch.guidance,
            "generator": generators,
            "output_type": "np",
            "callback_on_step_end": self._step_callback(on_step, should_stop),
            "callback_on_step_end_tensor_inputs": ["latents"],
        }
        if batch.kind == "txt2img":
            kwargs.update(width=batch.width, height=batch.height)
        else:
            # img2img runs steps × strength steps: never let that round down to zero.
            steps = max(batch.steps, math.ceil(1 / batch.strength))
            kwargs.update(image=inits, strength=batch.strength, num_inference_steps=steps)
        with self._vae_upcast(pipe, upcast), torch.inference_mode():
            output = pipe(**kwargs)
        return np.asarray(output.images)

    def _step_callback(self, on_step: StepCallback, should_stop: StopCheck) -> Any:
        def callback(
            pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            if should_stop():
                raise Interrupted()
            latents = tensors["latents"]
            on_step(step + 1, int(pipe.num_timesteps), lambda: latent_preview(latents[0]))
            if should_stop():
                raise Interrupted()
            return tensors

        return callback

    @contextlib.contextmanager
    def _vae_upcast(self, pipe: Any, upcast: bool) -> Any:
        vae = pipe.vae
        if not upcast or vae.dtype == torch.float32:
            yield
            return
        vae.to(torch.float32)
        saved = vae.config.force_upcast
        try:
            yield
        finally:
            vae.to(self.dtype)
            del saved

    def _package(self, batch: Batch, arrays: np.ndarray) -> list[list[GeneratedImage]]:
        images = [Image.fromarray(_to_uint8(array)) for array in arrays]
        flags = self._check_safety(images, arrays)
        results: list[list[GeneratedImage]] = []
        cursor = 0
        for item in batch.items:
            count = len(item.seeds)
            results.append(
                [GeneratedImage(images[i], flags[i]) for i in range(cursor, cursor + count)]
            )
            cursor += count
        return results

    def _check_safety(self, images: list[Image.Image], arrays: np.ndarray) -> list[bool | None]:
        if self._safety is None:
            return [None] * len(images)
        checker, processor = self._safety
        clip_input = processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            _, flags = checker(images=arrays.copy(), clip_input=clip_input)
        return [bool(flag) for flag in flags]

    def _note_truncation(self, batch: Batch) -> None:
        limit = self._pipe().tokenizer.model_max_length
        for item in batch.items:
            count = self.token_count(item.prompt)
            if count > limit:
                log.info(
                    "job %s: prompt has %d tokens; CLIP reads the first %d",
                    item.job_id,
                    count,
                    limit,
                )

    def _enable_memory_saving(self) -> None:
        pipe = self._pipe()
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
        self._is_memory_saving = True

    def _free_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and free device memory."""
        self._txt2img = None
        self._img2img = None
        self._safety = None
        self._free_memory()


def make_scheduler(name: str, config: Any) -> Any:
    """Return a fresh scheduler named as A1111 names it."""
    if name == "DPM++ 2M":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2
        )
    if name == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    if name == "Euler a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "Euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "DDIM":
        return DDIMScheduler.from_config(config)
    raise ValueError(f"unknown scheduler {name!r}")


def latent_preview(latents: Any) -> Image.Image:
    """Map a (4, h, w) latent to a small RGB image with a fixed linear map (no VAE)."""
    with torch.inference_mode():
        values = latents.detach().float().cpu()
        if values.shape[0] != 4:
            values = values[:3] if values.shape[0] >= 3 else values.repeat(3, 1, 1)[:3]
            rgb = values.permute(1, 2, 0)
        else:
            rgb = torch.einsum("chw,cr->hwr", values, LATENT_RGB)
        array = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)


def _has_bad_images(arrays: np.ndarray) -> bool:
    if np.isnan(arrays).any():
        return True
    flat = arrays.reshape(arrays.shape[0], -1)
    return bool((flat.max(axis=1) < 0.02).any())


def _is_oom_message(error: BaseException) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _pick_device(wanted: str) -> str:
    if wanted != "auto":
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ModelUnavailable(
                "device", f"{wanted} asked for but CUDA is not available",
                "Install a CUDA build of torch, or set engine.device = \"cpu\".",
            )  # fmt: skip
        return wanted
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _pick_dtype(wanted: str, device: str) -> torch.dtype:
    if wanted == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[wanted]


def _require_safetensors(folder: Path, source: str) -> None:
    if not (folder / "model_index.json").exists():
        raise ModelUnavailable(
            source,
            "the folder has no model_index.json",
            "Point engine.model at a diffusers Stable Diffusion folder (save_pretrained layout).",
        )
    if not any(folder.rglob("*.safetensors")):
        raise ModelUnavailable(
            source,
            "the folder has no .safetensors weights (pickle .bin/.ckpt files are never loaded)",
            "Convert the weights to safetensors.",
        )


def _hub_hint(source: str) -> str:
    return (
        f"Download it once on a machine with internet (`huggingface-cli download {source}`), "
        "or set engine.model to a local diffusers folder or .safetensors file; with "
        "engine.offline = true only the local cache is used."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def cuda_available() -> bool:
    """Return whether CUDA can be used (for tests and status)."""
    return bool(torch.cuda.is_available())


def peak_memory_bytes() -> int | None:
    """Return the peak CUDA memory allocated, or None on CPU."""
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())


def set_threads(count: int) -> None:
    """Set torch's intra-op thread count (tests use 1 on this 2-core box)."""
    torch.set_num_threads(max(1, count))
