"""The diffusers pipeline of one model on one device: load it, run batches on a worker thread.

The only engine module that imports torch or diffusers (tinymodel.py is called from here), and
only `LocalWorker` imports it. Everything here runs on that worker's single thread: CUDA
contexts and diffusers schedulers are not thread-safe.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import logging
import math
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
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
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from engine.config import BUILTIN_DEMO, BUILTIN_TINY, EngineSettings, LoraSettings  # noqa: E402
from engine.errors import (  # noqa: E402
    FailureKind,
    GenerationFailed,
    Interrupted,
    ModelUnavailable,
    OutOfMemory,
)
from engine.models import (  # noqa: E402
    BUILTIN_DEMO_INPAINT,
    DEMO_FOLDER,
    DEMO_INPAINT_FOLDER,
    ModelFacts,
    ModelSpec,
    inspect,
)
from engine.worker import Batch, GeneratedImage  # noqa: E402

log = logging.getLogger(__name__)
diffusers_logging.disable_progress_bar()
# "No LoRA keys associated to CLIPTextModel": most LoRAs change the UNet alone, as they may.
logging.getLogger("diffusers.loaders.lora_base").setLevel(logging.ERROR)
# peft warns whenever a second adapter joins a model (several stay loaded here on purpose), and
# when diffusers deletes a LoRA that failed to load while another was active.
warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
warnings.filterwarnings("ignore", "Adapter .* was active which is now deleted", UserWarning)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# from_pretrained builds modules under accelerate's init_empty_weights, which patches
# torch.nn.Module for the whole process: two workers loading at once got meta tensors.
LOAD_LOCK = threading.Lock()
INPAINT_KINDS = ("inpaint", "outpaint")
SEAM_PX = 4
LORA_CACHE = 8  # adapters kept loaded (and disabled between batches) per resident model

# Linear map from SD's 4 latent channels to RGB: a cheap preview with no VAE call.
LATENT_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)

StepCallback = Callable[[int, int, Callable[[], bytes] | None], None]
StopCheck = Callable[[], bool]


class Pipeline:
    """One model's weights on one device; every method runs on the worker's thread."""

    def __init__(
        self, spec: ModelSpec, settings: EngineSettings, data_dir: Path, device: str
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.device = device
        self.dtype = _pick_dtype(settings.dtype, device)
        self.facts = ModelFacts(name=spec.name, kind=spec.kind)
        self._main: Any = None  # diffusers' lazy modules defeat static typing
        self._img2img: Any = None
        self._safety: tuple[Any, Any] | None = None
        self._is_memory_saving = False
        self._noise = False  # the tiny random model stands in (builtin:tiny, or no demo folder)
        # LoRA name → (adapter name, the file's identity); least recently used first.
        self._adapters: OrderedDict[str, tuple[str, tuple[str, int, int]]] = OrderedDict()
        self._adapter_count = 0

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> ModelFacts:
        """Load weights (safetensors only) onto the device; raise ModelUnavailable."""
        with LOAD_LOCK:  # one load at a time in this process (see LOAD_LOCK)
            source = self._resolve_source()
            pipe = self._from_source(source)
        pipe.set_progress_bar_config(disable=True)
        self._place(pipe)
        self._main = pipe
        if not self.is_inpaint:
            self._img2img = StableDiffusionImg2ImgPipeline(
                **pipe.components, requires_safety_checker=False
            )
            self._img2img.set_progress_bar_config(disable=True)
        if self.settings.safety_checker:
            self._safety = self._load_safety_checker(self.settings.safety_checker)
        facts = inspect(replace(self.spec, path=source), self.data_dir)
        self.facts = replace(
            facts,
            name=self.spec.name,
            native_px=self.native_px,
            kind="inpaint" if self.is_inpaint else "txt2img",
            is_demo=self.spec.path in (BUILTIN_DEMO, BUILTIN_DEMO_INPAINT) and not self._noise,
            is_noise=self._noise,
        )
        log.info(
            "model %s loaded on %s (%s), native size %d px",
            self.spec.name,
            self.device,
            self.dtype_name,
            self.native_px,
        )
        return self.facts

    def _resolve_source(self) -> str:
        path = self.spec.path
        if path == BUILTIN_DEMO and (DEMO_FOLDER / "model_index.json").exists():
            return str(DEMO_FOLDER)
        if path == BUILTIN_DEMO_INPAINT and (DEMO_INPAINT_FOLDER / "model_index.json").exists():
            return str(DEMO_INPAINT_FOLDER)
        if path in (BUILTIN_DEMO, BUILTIN_TINY):
            self._noise = True
            return str(build_tiny_model(self.data_dir / "models" / "tiny"))
        return path

    def _from_source(self, source: str) -> Any:
        path = Path(source).expanduser()
        cls: Any = (
            StableDiffusionInpaintPipeline
            if self.spec.kind == "inpaint"
            else StableDiffusionPipeline
        )
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
                return cls.from_single_file(
                    str(path), local_files_only=self.settings.offline, **common
                )
            if path.is_dir():
                require_safetensors(path, source)
                if _folder_class(path) == "StableDiffusionInpaintPipeline":
                    cls = StableDiffusionInpaintPipeline
                return cls.from_pretrained(
                    str(path), use_safetensors=True, local_files_only=True, **common
                )
            if path.is_absolute() or source.startswith((".", "~")) or source.count("/") != 1:
                raise ModelUnavailable(
                    source,
                    "no such file or folder",
                    f"Check {self.spec.config_key} in config.toml.",
                )
            return cls.from_pretrained(
                source, use_safetensors=True, local_files_only=self.settings.offline, **common
            )
        except ModelUnavailable:
            raise
        except (OSError, ValueError) as error:
            raise ModelUnavailable(source, _first_line(error), _hub_hint(source)) from error

    def _place(self, pipe: Any) -> None:
        settings = self.settings
        if settings.cpu_offload and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=self.device)
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
    def diffusers(self) -> Any:
        """Return the loaded diffusers pipeline (txt2img, or inpaint for an inpainting model)."""
        if self._main is None:
            raise RuntimeError("pipeline not loaded")
        return self._main

    @property
    def is_inpaint(self) -> bool:
        """Return whether this is an inpainting model (UNet with 9 input channels)."""
        pipe = self.diffusers
        return isinstance(pipe, StableDiffusionInpaintPipeline) or (
            int(pipe.unet.config.in_channels) == 9
        )

    @property
    def native_px(self) -> int:
        """Return the model's native image size (768 for SD 2.1)."""
        pipe = self.diffusers
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    @property
    def dtype_name(self) -> str:
        """Return the dtype as text (float16, float32...)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def is_memory_saving(self) -> bool:
        """Return whether the out-of-memory fallback (slicing and tiling) is on."""
        return self._is_memory_saving

    def token_count(self, text: str) -> int:
        """Return how many CLIP tokens a prompt takes (77 is the most the encoder sees)."""
        return len(self.diffusers.tokenizer(text, truncation=False).input_ids)

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        batch: Batch,
        on_step: StepCallback,
        should_stop: StopCheck,
        loras: Mapping[str, LoraSettings] | None = None,
    ) -> list[list[GeneratedImage]]:
        """Run one batch; return images per item. Raise Interrupted, OutOfMemory, GenerationFailed.

        Out of memory: free memory outside the except block, retry once with attention slicing
        and VAE tiling. A NaN or all-black result is retried once with the VAE in float32.
        The batch's LoRAs (`loras`: this worker's own [loras] by name) are on only for it.
        """
        with self._loras_on(batch.loras, loras or {}):
            return self._run(batch, on_step, should_stop)

    def _run(
        self, batch: Batch, on_step: StepCallback, should_stop: StopCheck
    ) -> list[list[GeneratedImage]]:
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
                raise GenerationFailed(
                    "the model produced a NaN or black image twice", FailureKind.NAN
                )
        return self._package(batch, arrays)

    # -- LoRAs -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _loras_on(
        self, wanted: Sequence[tuple[str, float]], specs: Mapping[str, LoraSettings]
    ) -> Iterator[None]:
        """Switch the batch's adapters on at their weights, and every adapter off afterwards.

        Off is peft's own bypass (each LoRA layer calls its base layer alone), so the next job
        without LoRAs runs exactly the base weights; adapters stay loaded for the next batch
        that wants them (at most LORA_CACHE, least recently used deleted first).
        """
        if not wanted:
            yield
            return
        pipe = self.diffusers
        try:
            # diffusers switches on each adapter it loads: off again below, even when the
            # batch's second LoRA fails to load after its first one did.
            keep = {name for name, _ in wanted}
            names = [self._adapter(name, specs, keep) for name, _ in wanted]
            pipe.enable_lora()
            pipe.set_adapters(names, [weight for _, weight in wanted])
            yield
        finally:
            self._all_off()

    def _all_off(self) -> None:
        if self._adapters:  # with none loaded, the model has no LoRA layers to switch off
            self.diffusers.disable_lora()

    def _adapter(
        self, name: str, specs: Mapping[str, LoraSettings], keep: set[str] | None = None
    ) -> str:
        """Return a LoRA's adapter name, loading it (from this worker's own config) if needed;
        adapters in `keep` (this batch's) are never the ones deleted to make room."""
        spec = specs.get(name)
        if spec is None:
            raise GenerationFailed(f"LoRA {name} is not configured on this worker")
        identity = _file_identity(spec.path)
        cached = self._adapters.get(name)
        if cached is not None and cached[1] == identity:
            self._adapters.move_to_end(name)
            return cached[0]
        if cached is not None:  # the file changed (or the name points elsewhere after reload)
            self._drop_adapter(name)
        spare = [old for old in self._adapters if old not in (keep or ())]
        while spare and len(self._adapters) >= LORA_CACHE:
            self._drop_adapter(spare.pop(0))
        self._adapter_count += 1
        adapter = f"lora{self._adapter_count}"  # peft names must not hold the dots names may
        try:
            self.diffusers.load_lora_weights(spec.path, adapter_name=adapter)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise GenerationFailed(
                f"LoRA {name} does not fit model {self.spec.name}: {_lora_error(error)}"
            ) from error
        self._adapters[name] = (adapter, identity)
        return adapter

    def _drop_adapter(self, name: str) -> None:
        adapter, _ = self._adapters.pop(name)
        self.diffusers.delete_adapters([adapter])

    def check_lora(self, name: str, spec: LoraSettings) -> str | None:
        """Load a LoRA onto this model and keep it (disabled); return why it does not fit, or None.

        diffusers checks every shape against the model's modules, in any LoRA layout it reads.
        """
        try:
            self._adapter(name, {name: spec})
        except GenerationFailed as error:
            return error.reason
        finally:
            self._all_off()
        return None

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
        base = self._base_for(batch.kind)
        # A shallow copy per call: its own scheduler and call state, the same weights. A worker
        # thread abandoned by the watchdog can never share a scheduler with its successor.
        pipe = copy.copy(base)
        pipe.scheduler = make_scheduler(batch.scheduler, base.scheduler.config)
        kwargs = _call_arguments(batch)
        kwargs["callback_on_step_end"] = self._step_callback(on_step, should_stop)
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
        with self._vae_upcast(pipe, upcast), torch.inference_mode():
            output = pipe(**kwargs)
        arrays = np.asarray(output.images)
        if batch.kind in INPAINT_KINDS:
            arrays = keep_unmasked(arrays, kwargs["image"], kwargs["mask_image"])
        return arrays

    def _base_for(self, kind: str) -> Any:
        if kind in INPAINT_KINDS:
            if not self.is_inpaint:
                raise GenerationFailed(f"model {self.spec.name} is not an inpainting model")
            return self.diffusers
        if self.is_inpaint:
            raise GenerationFailed(f"model {self.spec.name} only inpaints")
        return self.diffusers if kind == "txt2img" else self._img2img

    def _step_callback(self, on_step: StepCallback, should_stop: StopCheck) -> Any:
        def callback(
            pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            if should_stop():
                raise Interrupted()
            latents = tensors["latents"]
            on_step(step + 1, int(pipe.num_timesteps), lambda: latent_preview_png(latents[0]))
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
        # The pipeline still hands the VAE latents (and, for img2img and inpaint, images) in the
        # UNet's dtype: cast them in, and what encode returns back out, while it runs in float32.
        dtype, decode, encode = self.dtype, vae.decode, vae.encode

        def decode32(z: Any, *args: Any, **kwargs: Any) -> Any:
            return decode(z.to(torch.float32), *args, **kwargs)

        def encode32(x: Any, *args: Any, **kwargs: Any) -> Any:
            output = encode(x.to(torch.float32), *args, **kwargs)
            dist = output[0] if isinstance(output, tuple) else output.latent_dist
            dist.mean, dist.std, dist.var, dist.logvar = (
                t.to(dtype) for t in (dist.mean, dist.std, dist.var, dist.logvar)
            )
            dist.parameters = dist.parameters.to(dtype)
            return output

        vae.to(torch.float32)
        vae.decode, vae.encode = decode32, encode32
        try:
            yield
        finally:
            del vae.decode, vae.encode  # the class's own methods again
            vae.to(dtype)

    def _package(self, batch: Batch, arrays: np.ndarray) -> list[list[GeneratedImage]]:
        pixels = [_to_uint8(array) for array in arrays]
        flags = self._check_safety(pixels, arrays)
        results: list[list[GeneratedImage]] = []
        cursor = 0
        for item in batch.items:
            images = []
            for seed in item.seeds:
                rgb = pixels[cursor]
                images.append(
                    GeneratedImage(
                        rgb.tobytes(), seed, rgb.shape[1], rgb.shape[0], "rgb", flags[cursor]
                    )
                )
                cursor += 1
            results.append(images)
        return results

    def _check_safety(self, pixels: list[np.ndarray], arrays: np.ndarray) -> list[bool | None]:
        if self._safety is None:
            return [None] * len(pixels)
        checker, processor = self._safety
        images = [Image.fromarray(rgb) for rgb in pixels]
        clip_input = processor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            _, flags = checker(images=arrays.copy(), clip_input=clip_input)
        return [bool(flag) for flag in flags]

    def _note_truncation(self, batch: Batch) -> None:
        limit = self.diffusers.tokenizer.model_max_length
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
        pipe = self.diffusers
        pipe.enable_attention_slicing()
        pipe.vae.enable_tiling()
        self._is_memory_saving = True

    def _free_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        """Drop the model and free device memory."""
        self._main = None
        self._img2img = None
        self._safety = None
        self._adapters.clear()
        self._free_memory()


def _file_identity(path: str) -> tuple[str, int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, stat.st_size, stat.st_mtime_ns)


def _call_arguments(batch: Batch) -> dict[str, Any]:
    """Return the keyword arguments of one diffusers call for a batch (one generator per image)."""
    prompts, negatives, generators, inits, masks = [], [], [], [], []
    for item in batch.items:
        for seed in item.seeds:
            prompts.append(item.prompt)
            negatives.append(item.negative_prompt)
            generators.append(torch.Generator("cpu").manual_seed(seed))
            if item.init_png is not None:
                inits.append(_decode(item.init_png, "RGB", batch.width, batch.height))
            if item.mask_png is not None:
                masks.append(_decode(item.mask_png, "L", batch.width, batch.height))
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "negative_prompt": negatives if any(negatives) else None,
        "num_inference_steps": batch.steps,
        "guidance_scale": batch.guidance,
        "generator": generators,
        "output_type": "np",
    }
    if batch.kind == "txt2img":
        kwargs.update(width=batch.width, height=batch.height)
    elif batch.kind in INPAINT_KINDS:
        kwargs.update(
            image=inits, mask_image=masks, width=batch.width, height=batch.height, strength=1.0
        )
    else:
        # img2img runs steps × strength steps: never let that round down to zero.
        steps = max(batch.steps, math.ceil(1 / batch.strength))
        kwargs.update(image=inits, strength=batch.strength, num_inference_steps=steps)
    return kwargs


def keep_unmasked(
    arrays: np.ndarray, inits: list[Image.Image], masks: list[Image.Image]
) -> np.ndarray:
    """Put the kept area's own pixels back (the VAE round trip would blur them), as A1111
    does; the seam is softened only inside the kept area, within SEAM_PX of the mask."""
    kept = []
    for array, init, mask in zip(arrays, inits, masks, strict=True):
        hard = np.asarray(mask, dtype=np.float32) / 255.0
        soft = np.asarray(mask.filter(ImageFilter.BoxBlur(SEAM_PX)), dtype=np.float32) / 255
        weight = np.maximum(hard, soft)[..., None]
        old = np.asarray(init, dtype=np.float32) / 255.0
        kept.append(array * weight + old * (1 - weight))
    return np.stack(kept).astype(arrays.dtype)


def _decode(data: bytes, mode: str, width: int, height: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        converted = image.convert(mode)
    if converted.size != (width, height):
        converted = converted.resize((width, height), Image.Resampling.LANCZOS)
    return converted


def _folder_class(folder: Path) -> str:
    try:
        import json

        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def build_tiny_model(folder: Path) -> Path:
    """Build the tiny random model once (atomically: two workers may start together)."""
    if (folder / "model_index.json").exists():
        return folder
    from engine import tinymodel

    log.info("building the tiny offline model in %s (random weights)", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    tinymodel.build(scratch)
    try:
        os.rename(scratch, folder)
    except OSError:  # another worker finished first
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


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


def latent_preview_png(latents: Any) -> bytes:
    """Return the latent preview as PNG bytes (fast, small: the latent is 1/8 of the image)."""
    buffer = io.BytesIO()
    latent_preview(latents).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


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


def pick_device(wanted: str) -> str:
    """Return the device to use for `auto` or a named one; raise ModelUnavailable without CUDA."""
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


def require_safetensors(folder: Path, source: str) -> None:
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


def _lora_error(error: BaseException) -> str:
    """Return the first shape torch refused (its whole message lists every tensor)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    mismatch = next((line for line in lines if line.startswith("size mismatch")), None)
    return (mismatch or (lines[0] if lines else type(error).__name__))[:300]


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
