"""2. fullsize-step — the full SD 2.1 architecture (random weights), 512 px, 2 steps, CPU.

Each side runs in its own subprocess (peak RSS is per process), in the order bare, engine,
engine, bare (ABBA), niced. Inside, forward hooks time the text encoder, each UNet call and
the VAE decode the same way on both sides, so the per-step time excludes text encoding and
VAE decoding, and the rest (PNG, SQLite, thread hops) is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import models, report

SIZE_PX = 512
STEPS = 2
ORDER = ("bare", "engine", "engine", "bare")
TIME_GOAL = 1.01
MEMORY_GOAL = 1.05


class Clock:
    """Hooks that time a pipeline's text encoder, UNet calls and VAE decodes."""

    def __init__(self, pipe: Any) -> None:
        self.spans: dict[str, list[tuple[float, float]]] = {"text": [], "unet": [], "vae": []}
        self._open: dict[str, float] = {}
        for name, module in (("text", pipe.text_encoder), ("unet", pipe.unet)):
            module.register_forward_pre_hook(lambda *_, n=name: self._start(n))
            module.register_forward_hook(lambda *_, n=name: self._stop(n))
        decode = pipe.vae.decode

        def timed_decode(*args: Any, **kwargs: Any) -> Any:
            self._start("vae")
            try:
                return decode(*args, **kwargs)
            finally:
                self._stop("vae")

        pipe.vae.decode = timed_decode

    def _start(self, name: str) -> None:
        self._open[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self.spans[name].append((self._open.pop(name), time.perf_counter()))

    def figures(self, total_s: float) -> dict[str, Any]:
        """Return text, steps (first UNet start → last UNet end), VAE and the rest, in s."""
        text = sum(end - start for start, end in self.spans["text"])
        unet = self.spans["unet"]
        loop = unet[-1][1] - unet[0][0]
        vae = sum(end - start for start, end in self.spans["vae"])
        return {
            "total_s": total_s,
            "text_encoder_s": text,
            "steps_s": loop,
            "per_step_s": loop / len(unet),
            "unet_calls_s": [end - start for start, end in unet],
            "vae_decode_s": vae,
            "rest_s": total_s - text - loop - vae,
        }


def child(side: str, folder: Path) -> dict[str, Any]:
    """Run one side in this process: load, one image, figures and peak RSS."""
    from bench.contenders import Bare, EngineSide, check_outcomes, works

    work = works(1, SIZE_PX, STEPS, first_seed=42)
    started = time.perf_counter()
    if side == "bare":
        bare = Bare(folder)
        load_s = time.perf_counter() - started
        clock = Clock(bare.pipe)
        rss_loaded = _rss_now()
        started = time.perf_counter()
        bare.generate(work)
        total_s = time.perf_counter() - started
    else:
        engine = EngineSide(folder)

        async def run() -> tuple[float, float, Clock, int]:
            await engine.start()
            loaded = time.perf_counter() - started
            clock = Clock(engine.pipe)
            rss = _rss_now()
            begin = time.perf_counter()
            check_outcomes(await engine.generate(work))
            total = time.perf_counter() - begin
            await engine.close()
            return loaded, total, clock, rss

        load_s, total_s, clock, rss_loaded = asyncio.run(run())
    figures = clock.figures(total_s)
    figures.update(side=side, load_s=load_s, rss_after_load_bytes=rss_loaded)
    figures["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures["torch_threads"] = _threads()
    return figures


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def run() -> dict[str, Any]:
    """Build the model once, run the sides in subprocesses (ABBA), write results and RESULTS.md."""
    facts = report.machine()
    started = time.perf_counter()
    folder = models.ensure()
    build_s = time.perf_counter() - started
    runs = []
    for side in ORDER:
        out = Path(tempfile.mkstemp(prefix=f"bench-fullsize-{side}-", suffix=".json")[1])
        command = [sys.executable, "-m", "bench.fullsize_step", "--side", side, "--out", str(out)]
        print(f"  fullsize-step: {side} ...", flush=True)
        subprocess.run(["nice", "-n", "10", *command], check=True, env=_child_env())
        runs.append(json.loads(out.read_text()))
        out.unlink()
    data = summarise(runs)
    data.update(name="fullsize_step", machine=facts, build_or_cache_s=round(build_s, 1))
    data["parameters"] = models.parameter_counts(folder)
    report.write("fullsize_step", data)
    report.append("fullsize-step (SD 2.1 architecture, CPU, 512 px)", facts, lines(data))
    return data


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per side and the engine ÷ bare ratios for step time and peak RSS."""
    sides: dict[str, Any] = {}
    for side in ("bare", "engine"):
        mine = [r for r in runs if r["side"] == side]
        sides[side] = {
            key: report.summary([r[key] for r in mine])
            for key in (
                "per_step_s",
                "text_encoder_s",
                "vae_decode_s",
                "rest_s",
                "total_s",
                "load_s",
                "peak_rss_bytes",
                "rss_after_load_bytes",
            )
        }
    step = report.ratio(
        sides["engine"]["per_step_s"]["median"], sides["bare"]["per_step_s"]["median"]
    )
    memory = report.ratio(
        sides["engine"]["peak_rss_bytes"]["median"], sides["bare"]["peak_rss_bytes"]["median"]
    )
    total = report.ratio(sides["engine"]["total_s"]["median"], sides["bare"]["total_s"]["median"])
    return {
        "size_px": SIZE_PX,
        "steps": STEPS,
        "order": list(ORDER),
        "ratio": step,
        "time_ratio_per_step": step,
        "time_ratio_total": total,
        "memory_ratio_peak_rss": memory,
        "meets_time_goal": step <= TIME_GOAL,
        "meets_memory_goal": memory <= MEMORY_GOAL,
        "sides": sides,
        "runs": runs,
    }


def lines(data: dict[str, Any]) -> list[str]:
    """Return the RESULTS.md lines for one run."""
    bare, engine = data["sides"]["bare"], data["sides"]["engine"]
    gib = 2**30
    rows = [
        ("per step (guided UNet + scheduler + callback)", "per_step_s", 1, "s"),
        ("text encoder", "text_encoder_s", 1, "s"),
        ("VAE decode", "vae_decode_s", 1, "s"),
        ("rest (PNG, SQLite, hops)", "rest_s", 1, "s"),
        ("total, one image", "total_s", 1, "s"),
        ("load", "load_s", 1, "s"),
        ("RSS after load", "rss_after_load_bytes", gib, "GiB"),
        ("peak RSS", "peak_rss_bytes", gib, "GiB"),
    ]
    threads = data["runs"][0].get("torch_threads")
    out = [
        f"{data['size_px']} px, {data['steps']} steps DPM++ 2M, guidance 7; each side in its "
        f"own niced subprocess, order {', '.join(data['order'])}; torch threads {threads}. "
        "Medians of 2 per side.",
        "",
        "| | bare | engine | engine ÷ bare |",
        "|---|---|---|---|",
    ]
    for label, key, scale, unit in rows:
        b, e = bare[key]["median"] / scale, engine[key]["median"] / scale
        out.append(f"| {label} | {b:.3f} {unit} | {e:.3f} {unit} | {report.ratio(e, b):.3f} |")
    out += [
        "",
        f"Per-step ratio **{data['time_ratio_per_step']:.3f}** (goal ≤ {TIME_GOAL}: "
        f"{'met' if data['meets_time_goal'] else 'missed'}); peak RSS ratio "
        f"**{data['memory_ratio_peak_rss']:.3f}** (goal ≤ {MEMORY_GOAL}: "
        f"{'met' if data['meets_memory_goal'] else 'missed'}). "
        "Raw values: `bench/results/fullsize_step.json`.",
    ]
    return out


def main() -> None:
    """Entry point: `--side bare|engine --out FILE` runs one child; no arguments runs it all."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=("bare", "engine"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.side is None:
        run()
        return
    figures = child(args.side, models.folder_for(models.SD21))
    args.out.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
