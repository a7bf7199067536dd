"""What LoRAs cost a worker: loading one, switching it on and off per batch, evicting it.

Measured through the engine's own `Pipeline` on the tests' tiny model (what a batch pays:
`set_adapters` before, peft's disable after; and a whole 4-step image with the adapter loaded but
off against one on a pipeline that never loaded it), and on the full-size SD 2.1 UNet (random
weights, same shapes) with a rank-16 LoRA on every attention projection, the usual SD LoRA:
diffusers' `load_lora_adapter`, `set_adapters`, `disable_lora`, `delete_adapters`. CPU, float32.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import models, report

REPS = 20
FULLSIZE_REPS = 5


def _timed(action: Callable[[], Any], reps: int) -> dict[str, Any]:
    values = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        values.append(time.perf_counter() - started)
    return report.summary(values)


def tiny(folder: Path, scratch: Path) -> dict[str, Any]:
    """Time the engine's Pipeline on the tiny model with the tests' tiny LoRA."""
    from engine import tinymodel
    from engine.config import EngineSettings, LoraSettings
    from engine.models import ModelSpec
    from engine.pipeline import Pipeline
    from engine.worker import Batch, BatchItem

    lora = tinymodel.build_lora(folder, scratch / "fox.safetensors")
    specs = {"fox": LoraSettings(path=str(lora))}
    settings = EngineSettings(device="cpu", dtype="float32")

    def pipeline() -> Pipeline:
        made = Pipeline(ModelSpec("tiny", str(folder)), settings, scratch, "cpu")
        made.load()
        return made

    with_lora, never = pipeline(), pipeline()
    started = time.perf_counter()
    assert with_lora.check_lora("fox", specs["fox"]) is None
    first_load = time.perf_counter() - started

    def switch() -> None:
        with with_lora._loras_on([("fox", 0.8)], specs):
            pass

    def evict_and_load() -> None:
        with_lora._drop_adapter("fox")
        with_lora._adapter("fox", specs)

    batch = Batch(
        id="b:1", model="tiny", kind="txt2img", width=32, height=32, steps=4, guidance=7.0,
        scheduler="DPM++ 2M", items=(BatchItem("b", "a fox", "", (7,)),),
    )  # fmt: skip

    def image(pipe: Pipeline) -> Callable[[], Any]:
        return lambda: pipe.run(batch, lambda *_: None, lambda: False, specs)

    loaded_off, plain = [], []
    for index in range(REPS):  # interleaved, order alternating: the machine's load hits both
        pair = [(loaded_off, with_lora), (plain, never)]
        for values, pipe in pair if index % 2 else pair[::-1]:
            values.append(_timed(image(pipe), 1)["median"])
    return {
        "first_load_s": first_load,
        "switch_on_off": _timed(switch, REPS),
        "evict_and_load": _timed(evict_and_load, REPS),
        "image_adapter_loaded_off": report.summary(loaded_off),
        "image_never_loaded": report.summary(plain),
    }


def fullsize(scratch: Path, rank: int = 16) -> dict[str, Any]:
    """Time diffusers' adapter calls on the full-size SD 2.1 UNet (random weights)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = models._unet(models.SD21)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False),
        adapter_name="made",
    )
    path = scratch / "sd21-lora.safetensors"
    StableDiffusionPipeline.save_lora_weights(
        scratch, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="made"),
        weight_name=path.name,
    )  # fmt: skip
    unet.delete_adapters(["made"])
    count = [0]

    def load() -> None:
        count[0] += 1
        unet.load_lora_adapter(str(path), prefix="unet", adapter_name=f"a{count[0]}")

    def delete() -> None:
        unet.delete_adapters([f"a{count[0]}"])

    loads, deletes = [], []
    for _ in range(FULLSIZE_REPS):
        loads.append(_timed(load, 1)["median"])
        deletes.append(_timed(delete, 1)["median"])
    load()

    def switch() -> None:
        unet.enable_lora()
        unet.set_adapters([f"a{count[0]}"], [0.8])
        unet.disable_lora()

    return {
        "rank": rank,
        "file_bytes": path.stat().st_size,
        "load": report.summary(loads),
        "delete": report.summary(deletes),
        "switch_on_off": _timed(switch, REPS),
    }


def run() -> dict[str, Any]:
    """Run both cases; write results/loras.json and a RESULTS.md section."""
    from bench.overhead import tiny_model

    facts = report.machine()
    with tempfile.TemporaryDirectory(dir=models.CACHE.parent) as scratch:
        data: dict[str, Any] = {"name": "loras", "machine": facts}
        data["tiny"] = tiny(tiny_model(), Path(scratch))
        data["fullsize"] = fullsize(Path(scratch))
    report.write("loras", data)
    report.append("LoRAs (CPU)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    tiny, full = data["tiny"], data["fullsize"]
    ms = report.ms
    return [
        "| model | first load | switch on + off (per LoRA batch) | evict + load | image, "
        "adapter loaded but off / never loaded |",
        "|---|---|---|---|---|",
        f"| tiny, 4 steps 32 px | {ms(tiny['first_load_s'])} "
        f"| {ms(tiny['switch_on_off']['median'])} | {ms(tiny['evict_and_load']['median'])} "
        f"| {ms(tiny['image_adapter_loaded_off']['median'])} / "
        f"{ms(tiny['image_never_loaded']['median'])} |",
        f"| SD 2.1 UNet, rank-{full['rank']} LoRA ({full['file_bytes'] / 1e6:.1f} MB) "
        f"| {ms(full['load']['median'])} | {ms(full['switch_on_off']['median'])} "
        f"| {ms(full['delete']['median'] + full['load']['median'])} | — |",
        "",
        "Raw values: `bench/results/loras.json`.",
    ]
