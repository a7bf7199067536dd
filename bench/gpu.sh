#!/usr/bin/env bash
# The GPU benchmark, for a lent H100/H200 (see bench/README section in RESULTS.md).
# Run from the repository root. Needs python3 with torch + CUDA, transformers, accelerate,
# safetensors, Pillow; diffusers (and importlib_metadata) travel as wheels in .whl/bench/ when
# the machine lacks them. Writes gpu.json to $OUT (the device tool's folder) or bench/results/.
# GPU_DRY_RUN=1 runs the same phases on the CPU with a miniature model.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import diffusers" 2>/dev/null && compgen -G ".whl/bench/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/bench/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export BENCH_CACHE=${BENCH_CACHE:-/tmp/bench-cache} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || true
"$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__,
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
# The python part keeps its own deadline (GPU_DEADLINE_S, phases skipped past it); this is the
# hard stop. Results are written after every phase, so a stop keeps what was measured.
timeout "${GPU_TIMEOUT_S:-480}" "$PY" -m bench.gpu
