"""Run `python -m bot` with test-only faults, switched on by prompt markers and flag files.

Used by the system fault tests as the child's entry point (`python -m tests.system.faultinject
--config PATH`); nothing here is imported by the program itself. A prompt containing
`fault:hang` sleeps inside its first step (a hung step), `fault:raise` raises in the UNet,
`fault:oom` raises torch's out-of-memory error in the UNet (every attempt); while the file
`<IMAGINE_FAULT_DIR>/enospc` exists, `os.fsync` fails with ENOSPC (a full disk mid-write).
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Any

HANG = "fault:hang"
RAISE = "fault:raise"
OOM = "fault:oom"
ENOSPC_FLAG = "enospc"


def install(flags: Path, hang_s: float) -> None:
    """Patch the pipeline and os.fsync in this process."""
    import torch

    from engine import pipeline as pipeline_module

    current = {"prompts": ""}
    original_run = pipeline_module.Pipeline.run
    original_load = pipeline_module.Pipeline.load

    def run(self: Any, batch: Any, on_step: Any, should_stop: Any, *args: Any, **kw: Any) -> Any:
        prompts = " ".join(item.prompt for item in batch.items)
        current["prompts"] = prompts
        if HANG not in prompts:
            return original_run(self, batch, on_step, should_stop, *args, **kw)

        def hanging_step(step: int, total: int, preview: Any) -> None:
            if step == 1:
                time.sleep(hang_s)
            on_step(step, total, preview)

        return original_run(self, batch, hanging_step, should_stop, *args, **kw)

    def load(self: Any) -> Any:
        facts = original_load(self)
        unet = self.diffusers.unet
        forward = unet.forward

        def faulty(*args: Any, **kwargs: Any) -> Any:
            if RAISE in current["prompts"]:
                raise RuntimeError("injected fault: cuDNN exploded")
            if OOM in current["prompts"]:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return forward(*args, **kwargs)

        unet.forward = faulty
        return facts

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if (flags / ENOSPC_FLAG).exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    pipeline_module.Pipeline.run = run  # type: ignore[method-assign]
    pipeline_module.Pipeline.load = load  # type: ignore[method-assign]
    os.fsync = fsync  # type: ignore[assignment]


if __name__ == "__main__":
    install(
        Path(os.environ["IMAGINE_FAULT_DIR"]), float(os.environ.get("IMAGINE_FAULT_HANG_S", "5"))
    )
    sys.argv = ["bot", *sys.argv[1:]]
    runpy.run_module("bot", run_name="__main__", alter_sys=True)
