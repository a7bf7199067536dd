"""Turn a gpu.json from a GPU run (bench/gpu.sh) into results/gpu.json and a RESULTS.md section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench import report


def record(path: Path | None = None) -> dict[str, Any]:
    """Copy `path` to results/gpu.json (when given elsewhere) and append its section."""
    target = report.RESULTS_DIR / "gpu.json"
    if path is not None and path.resolve() != target.resolve():
        report.RESULTS_DIR.mkdir(exist_ok=True)
        shutil.copyfile(path, target)
    data = json.loads(target.read_text())
    facts = dict(data["machine"])
    gpu = data.get("gpu", "GPU")
    facts["cpu"] = f"{gpu} (host CPU {facts['cpu']})"
    report.append(f"gpu ({gpu}, fp16, SD 2.1 architecture)", facts, lines(data))
    return data


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines: engine vs bare, floor fractions, batching, options."""
    phases = data["phases"]
    out = [
        "Random weights, fp16, 25 steps DPM++ 2M, guidance 7, one process; bare and engine "
        "interleaved, 3 repetitions after a warm-up; peak VRAM is above the loaded weights "
        f"({phases['load']['weights_vram_bytes'] / 2**30:.2f} GiB per pipeline). Floor = "
        "steps × TFLOP per guided UNet step (1.61 at 512 px, 4.30 at 768) ÷ 989 TFLOP/s.",
        "",
        "| size | bare s/image | engine s/image | ratio | bare it/s | engine it/s "
        "| UNet guided step | UNet % of floor | image % of floor (bare, engine) "
        "| peak extra VRAM (bare, engine) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in (768, 512):
        ab, micro = phases.get(f"engine_vs_bare_{size}px"), phases.get(f"micro_{size}px")
        if not ab or "error" in ab or not micro or "error" in micro:
            continue
        out.append(
            f"| {size} px | {ab['bare_s_per_image']['median']:.3f} "
            f"| {ab['engine_s_per_image']['median']:.3f} | **{ab['ratio']:.3f}** "
            f"| {micro.get('bare_it_per_s', 0):.1f} | {micro.get('engine_it_per_s', 0):.1f} "
            f"| {micro['unet_guided_step_s'] * 1000:.1f} ms "
            f"| {micro['unet_fraction_of_floor'] * 100:.1f} % "
            f"| {ab['bare_fraction_of_floor'] * 100:.1f} %, "
            f"{ab['engine_fraction_of_floor'] * 100:.1f} % "
            f"| {_gib(ab['bare_peak_extra_vram_bytes'])}, "
            f"{_gib(ab['engine_peak_extra_vram_bytes'])} |"
        )
    out += _batching_lines(phases.get("batching", {}))
    out += _option_lines(phases)
    out += ["", "Raw values: `bench/results/gpu.json`."]
    return out


def _batching_lines(batching: dict[str, Any]) -> list[str]:
    if not batching or "error" in batching or "skipped" in batching:
        return ["", f"Batching: {batching.get('error') or batching.get('skipped') or 'not run'}."]
    out = [
        "",
        f"Batching at {batching['size_px']} px: bare = one call of b prompts; engine = b jobs "
        "submitted at once to an idle engine with max_batch 4 (the first job starts alone, "
        "the rest batch behind it); queued = b jobs behind a running one, (b + 1) images ÷ "
        "total (runs from 2026-11-27 15:00 on).",
        "",
        "| b | bare s/call | bare s/image | engine s (all b jobs) | engine s/image "
        "| engine job latency median | engine queued images/s | peak extra VRAM (bare, engine) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in (1, 2, 4):
        b = batching.get(f"batch_{count}")
        if not b:
            continue
        out.append(
            f"| {count} | {b['bare_s_per_call']['median']:.3f} | {b['bare_s_per_image']:.3f} "
            f"| {b['engine_s_all_jobs']['median']:.3f} | {b['engine_s_per_image']:.3f} "
            f"| {b['engine_job_latency_s']['median']:.3f} "
            f"| {b.get('engine_queued_images_per_s', '—')} "
            f"| {_gib(b['bare_peak_extra_vram_bytes'])}, "
            f"{_gib(b['engine_peak_extra_vram_bytes'])} |"
        )
    return out


def _option_lines(phases: dict[str, Any]) -> list[str]:
    out = ["", "| engine option (768 px) | default s/image | with option | speedup | first image |"]
    out.append("|---|---|---|---|---|")
    for name in ("channels_last", "compile"):
        o = phases.get(name, {})
        if "speedup" not in o:
            out.append(f"| {name} | {o.get('error') or o.get('skipped') or 'not run'} | | | |")
            continue
        out.append(
            f"| {name} | {o['default_engine_s']['median']:.3f} "
            f"| {o['option_engine_s']['median']:.3f} | {o['speedup']:.3f} "
            f"| {o['first_image_s_incl_warm_up']:.1f} s (incl. warm-up) |"
        )
    return out


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"
