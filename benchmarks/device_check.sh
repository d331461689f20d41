#!/usr/bin/env bash
# One prepared accelerator check (issue 16), <= 8 minutes on one GPU, nothing downloaded:
#   bash benchmarks/device_check.sh [OUTDIR]          (default: results/device)
# 1. installs the project into the machine's Python (--no-deps: it uses the JAX / Flax / optax /
#    Orbax found there; falls back to PYTHONPATH when pip cannot install offline);
# 2. runs the attention-equality tests on the GPU: dense == chunked == fused (cuDNN where it
#    takes the shapes, in bfloat16) for outputs and gradients, causality in train mode;
# 3. times training steps of the ImageNet 64x64 paper model with 4 and 8 of its 60 layers (the
#    largest batch that fits; also with dense attention) and of the copy random_mirrored_131072
#    preset at batch 1: step time, TFLOP/s, MFU (benchmarks/device_step.py).
# Output: OUTDIR/device_check.log, device_step.{json,md}, pytest_gpu.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/device}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
{
  echo "== $(date -u +%FT%TZ) git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  if ! $PY -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null; then
    echo "pip could not install the project offline: using PYTHONPATH"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  echo "== attention equality on the accelerator"
  # Full f32 matmul precision for the f32 equality tests (the GPU default may use TF32).
  JAX_DEFAULT_MATMUL_PRECISION=highest timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_model.py \
    -k "attention_kernels or chunked_equals or gradients_equal or train_mode or on_gpu" 2>&1 | tee "$out/pytest_gpu.txt" | tail -15
  echo "== training steps"
  timeout 330 $PY benchmarks/device_step.py --out "$out"
  echo "== done $(date -u +%FT%TZ)"
} 2>&1 | tee "$out/device_check.log"
