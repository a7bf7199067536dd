"""`python -m bench [NAME ...]`: run benchmarks, write bench/results/*.json and RESULTS.md.

With no names it runs the CPU set `make bench` promises: overhead, batching (tiny model),
discord_latency, gallery, workers, remote (Redis + Celery boxes), demo (the offline demo
model's image and training-step times) and fullsize_step (the full SD 2.1 architecture;
~10 minutes of the total). `--quick` leaves fullsize_step out.
`batching-fullsize` adds the full-size batching case (another ~10 minutes).
`gpu-record FILE` appends a gpu.json from a GPU run to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _overhead() -> Any:
    from bench import overhead

    return overhead.run()


def _batching() -> Any:
    from bench import batching

    return batching.run()


def _batching_fullsize() -> Any:
    from bench import batching

    return batching.run(fullsize=True)


def _discord_latency() -> Any:
    from bench import discord_latency

    return discord_latency.run()


def _gallery() -> Any:
    from bench import gallery

    return gallery.run()


def _workers() -> Any:
    from bench import workers

    return workers.run()


def _remote() -> Any:
    from bench import remote

    return remote.run()


def _loras() -> Any:
    from bench import loras

    return loras.run()


def _demo() -> Any:
    from bench import demo

    return demo.run()


def _fullsize_step() -> Any:
    from bench import fullsize_step

    return fullsize_step.run()


BENCHMARKS: dict[str, Callable[[], Any]] = {
    "overhead": _overhead,
    "batching": _batching,
    "discord_latency": _discord_latency,
    "gallery": _gallery,
    "fullsize_step": _fullsize_step,
    "batching-fullsize": _batching_fullsize,
    "workers": _workers,
    "remote": _remote,
    "loras": _loras,
    "demo": _demo,
}
DEFAULT = (
    "overhead", "batching", "discord_latency", "gallery", "workers", "remote", "demo",
    "fullsize_step",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (default: the CPU set) and print where the figures went."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of: {', '.join(BENCHMARKS)}, gpu-record")
    parser.add_argument("--quick", action="store_true", help="leave fullsize_step out")
    args = parser.parse_args(argv)
    if args.names[:1] == ["gpu-record"]:
        from bench import gpu_record

        gpu_record.record(Path(args.names[1]) if len(args.names) > 1 else None)
        return 0
    names = args.names or [n for n in DEFAULT if not (args.quick and n == "fullsize_step")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    import torch

    # 2 cores shared with other work: one intra-op thread keeps the tiny-model timings stable
    # (fullsize_step's subprocesses use torch's default).
    torch.set_num_threads(1)
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        data = BENCHMARKS[name]()
        ratio = data.get("ratio") if isinstance(data, dict) else None
        shown = f", ratio {ratio}" if ratio is not None else ""
        print(f"bench: {name} done in {time.monotonic() - began:.0f} s{shown}", flush=True)
    print(f"bench: all done in {time.monotonic() - started:.0f} s; see bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
