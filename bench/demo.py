"""What the offline demo model costs: one image at its default steps, and one training step.

Images go through the engine's own `Pipeline.run` (the call a worker makes for `/imagine`) on the
shipped `engine/demo/model` at 32 px, guidance 6, DPM++ 2M, one thread: at its default 12 steps,
at the 20 it used before, and on the same folder with the smaller UNet tried for issue 20
(`SMALLER` channels instead of 64, 96, 128; random weights, which cost the same time as trained
ones) at 12. Cases alternate image by image, order flipping, so the machine's load hits all alike;
wall and process CPU time per image. One more case is the bare diffusers call `eval`'s
`seconds_per_image` times (no PIL image, no engine), to tell the engine's share from the
machine's speed of the moment.

Training steps use the recipe's own parts at 2 threads (as `train` runs, fused Adam): the UNet
step (batch 64: forward, backward, clipped AdamW step) at the shipped channels and at `SMALLER`,
interleaved, and the VAE step (batch 16 of drawn scenes, Adam step).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report

IMAGE_REPS = 12
TRAIN_REPS = 10
SMALLER = (32, 64, 96)  # the UNet channels tried for issue 20 (not shipped: see README)


def _smaller_model(scratch: Path) -> Path:
    """The shipped folder with a random UNet of `SMALLER` channels in place of its own."""
    from engine.demo.evaluate import MODEL_DIR
    from engine.demo.model import Shape, build_unet

    folder = scratch / "smaller"
    folder.mkdir()
    for part in MODEL_DIR.iterdir():
        if part.name != "unet":
            (folder / part.name).symlink_to(part.resolve())
    build_unet(replace(Shape(), unet_channels=SMALLER)).save_pretrained(str(folder / "unet"))
    return folder


def images(scratch: Path) -> dict[str, Any]:
    """Per-image wall and CPU time through the engine's Pipeline, cases interleaved."""
    import torch

    from engine.config import EngineSettings
    from engine.demo.evaluate import MODEL_DIR, load_pipeline, model_defaults
    from engine.models import ModelSpec
    from engine.pipeline import Pipeline
    from engine.worker import Batch, BatchItem

    settings = EngineSettings(device="cpu", dtype="float32")

    def pipeline(folder: Path) -> Pipeline:
        made = Pipeline(ModelSpec("demo", str(folder)), settings, scratch, "cpu")
        made.load()
        return made

    steps, guidance = model_defaults(MODEL_DIR)
    shipped = pipeline(MODEL_DIR)
    cases: dict[str, tuple[Pipeline, int]] = {
        f"shipped, {steps} steps (its default)": (shipped, steps),
        "shipped, 20 steps (the default before)": (shipped, 20),
    }
    smaller = ", ".join(str(c) for c in SMALLER)
    cases[f"UNet {smaller} (tried, not shipped), {steps} steps"] = (
        pipeline(_smaller_model(scratch)),
        steps,
    )

    def image(pipe: Pipeline, count: int, seed: int) -> Callable[[], Any]:
        batch = Batch(
            id=f"b:{seed}", model="demo", kind="txt2img", width=32, height=32, steps=count,
            guidance=guidance, scheduler="DPM++ 2M",
            items=(BatchItem("b", "a large red circle on a blue background", "", (seed,)),),
        )  # fmt: skip
        return lambda: pipe.run(batch, lambda *_: None, lambda: False, {})

    bare = load_pipeline(MODEL_DIR)

    def bare_image(count: int, seed: int) -> Callable[[], Any]:
        return lambda: bare(
            "a large red circle on a blue background", num_inference_steps=count,
            guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
            height=32, width=32, output_type="np",
        )  # fmt: skip

    bare_name = f"bare diffusers `pipe()` (as `eval` times it), {steps} steps"

    def engine_image(pipe: Pipeline, count: int) -> Callable[[int], Callable[[], Any]]:
        return lambda seed: image(pipe, count, seed)

    runs = {name: engine_image(pipe, count) for name, (pipe, count) in cases.items()}
    runs[bare_name] = lambda seed: bare_image(steps, seed)
    counts = {name: count for name, (_, count) in cases.items()} | {bare_name: steps}
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    for make in runs.values():  # warm-up, untimed
        make(0)()
    order = list(runs)
    for index in range(IMAGE_REPS):
        for name in order if index % 2 else order[::-1]:
            run = runs[name](index + 1)
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: {"steps": counts[name], "wall": report.summary(walls[name]),
               "cpu": report.summary(cpus[name])}
        for name in runs
    }  # fmt: skip


def training_steps() -> dict[str, Any]:
    """Median seconds per UNet and VAE training step, foreach against fused Adam."""
    import torch

    from engine.demo.dataset import draw_batch
    from engine.demo.model import Shape, build_text_encoder, build_tokenizer, build_unet, build_vae

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        shape = Shape()
        with tempfile.TemporaryDirectory() as vocab:
            tokenizer = build_tokenizer(Path(vocab) / "_vocab")
        text_encoder = build_text_encoder(shape, tokenizer).requires_grad_(False)
        ids = torch.randint(0, 20, (64, tokenizer.model_max_length))
        with torch.no_grad():
            states = text_encoder(ids)[0]
        side = shape.image_px // 4
        latents, t = torch.randn(64, 4, side, side), torch.randint(0, 1000, (64,))
        rng = random.Random(0)
        _, pixels = draw_batch(rng, 16, shape.image_px, any_pair=True)
        scenes = torch.from_numpy(pixels)

        def unet_step(channels: tuple[int, ...]) -> Callable[[], None]:
            unet = build_unet(replace(shape, unet_channels=channels))
            optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3, fused=True)

            def step() -> None:
                loss = unet(latents, t, states).sample.pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(unet.parameters()), 1.0)
                optimizer.step()

            return step

        vae = build_vae(shape)
        vae_optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3, fused=True)

        def vae_step() -> None:
            recon = vae.decode(vae.encode(scenes).latent_dist.mean).sample
            loss = (recon - scenes).abs().mean()
            vae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            vae_optimizer.step()

        steps = {"shipped": unet_step(shape.unet_channels), "smaller": unet_step(SMALLER)}
        steps["vae"] = vae_step
        values: dict[str, list[float]] = {name: [] for name in steps}
        for step in steps.values():
            step()  # warm-up
        for index in range(TRAIN_REPS):
            for name in list(steps) if index % 2 else list(steps)[::-1]:
                started = time.perf_counter()
                steps[name]()
                values[name].append(time.perf_counter() - started)
        result: dict[str, Any] = {"threads": 2, "channels": list(shape.unet_channels)}
        result |= {name: report.summary(v) for name, v in values.items()}
        result["ratio"] = report.ratio(result["smaller"]["median"], result["shipped"]["median"])
        return result
    finally:
        torch.set_num_threads(threads)


def run() -> dict[str, Any]:
    """Run both parts; write results/demo.json and a RESULTS.md section."""
    facts = report.machine()
    with tempfile.TemporaryDirectory() as scratch:
        data: dict[str, Any] = {"name": "demo", "machine": facts}
        data["images"] = images(Path(scratch))
    data["training"] = training_steps()
    report.write("demo", data)
    report.append("demo model (CPU)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    ms = report.ms
    out = [
        "Images through the engine's `Pipeline.run`, 32 px, guidance 6, DPM++ 2M, one thread, "
        f"{IMAGE_REPS} per case interleaved after a warm-up:",
        "",
        "| case | steps | wall per image (median, min–max) | CPU per image |",
        "|---|---|---|---|",
    ]
    for name, case in data["images"].items():
        wall, cpu = case["wall"], case["cpu"]
        out.append(
            f"| {name} | {case['steps']} | {ms(wall['median'])} ({ms(wall['min'])}–"
            f"{ms(wall['max'])}) | {ms(cpu['median'])} |"
        )
    training = data["training"]
    shipped = ", ".join(str(c) for c in training["channels"])
    smaller = ", ".join(str(c) for c in SMALLER)
    out += [
        "",
        f"Training steps, {training['threads']} threads, fused Adam, "
        f"{TRAIN_REPS} per case interleaved:",
        "",
        f"| UNet batch 64, channels {shipped} (shipped) | UNet batch 64, channels {smaller} "
        "| smaller ÷ shipped | VAE batch 16 |",
        "|---|---|---|---|",
        f"| {ms(training['shipped']['median'])} | {ms(training['smaller']['median'])} | "
        f"**{training['ratio']}** | {ms(training['vae']['median'])} |",
    ]
    out += ["", "Raw values: `bench/results/demo.json`."]
    return out
