"""Record benchmark figures: machine facts, medians, results/<name>.json and RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).parent
RESULTS_DIR = BENCH / "results"
RESULTS_MD = BENCH / "RESULTS.md"
PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "Pillow")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Return the median, spread and raw values of repeated timings."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": [round(v, 6) for v in values],
    }


def ratio(engine: float, bare: float) -> float:
    """Return engine ÷ bare, rounded for reading."""
    return round(engine / bare, 4) if bare else float("nan")


def machine() -> dict[str, Any]:
    """Return the facts a reader needs to compare runs: CPU, load, versions."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
    }


def write(name: str, data: dict[str, Any]) -> Path:
    """Write results/<name>.json (the previous run's file is replaced)."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def append(title: str, facts: dict[str, Any], lines: Sequence[str]) -> None:
    """Append a dated section to RESULTS.md: title, machine line, then the given lines."""
    packages = ", ".join(f"{k} {v}" for k, v in facts["packages"].items())
    head = [
        f"## {facts['date']} — {title}",
        "",
        f"Machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory_gib']} GiB; "
        f"load average before the run {facts['load_avg']}. Python {facts['python']}; {packages}.",
        "",
    ]
    if not RESULTS_MD.exists():
        RESULTS_MD.write_text(
            "# Benchmark results\n\nAppended by `python -m bench` (newest last). Ratios are "
            "engine ÷ bare diffusers, medians of interleaved A/B runs.\n\n"
        )
    with RESULTS_MD.open("a") as handle:
        handle.write("\n".join([*head, *lines, "", ""]))


def ms(seconds: float) -> str:
    """Return seconds as milliseconds text."""
    return f"{seconds * 1000:.1f} ms"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
