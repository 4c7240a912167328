#!/usr/bin/env bash
# The GPU check (issue 21): < 8 minutes on one GPU. Writes a markdown summary to $OUT/gpu_check.md (or ./gpu_check.md).
#   1. the CUDA-only tests (those that skip without a GPU: -k cuda, and tests/test_device_sync.py);
#   2. training throughput, regzoo vs timm, synthetic data, AMP bf16, channels_last, regnetx_002 and regnety_032:
#      timm's own train.py is not part of the pip `timm` package (it lives in the timm repository only, and this
#      machine is offline), so the comparison is benchmarks/train_vs_timm.py: timm's and regzoo's model in the same
#      training step at the same flags (same weights, batch, dtype, memory format, optimizer, loss); with and
#      without torch.compile through benchmarks/train_compile.py (what train.py --torchcompile does);
#   3. inference throughput (eager, AMP, compile) through `python -m regzoo.benchmark` (regzoo/cli/benchmark.py).
# Every step has its own timeout; a step that fails (or a machine without CUDA) is recorded, not fatal.
# Usage: bash benchmarks/gpu_check.sh   (from the repository root; PYTHON=... to choose the interpreter)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
REPORT=${OUT:-.}/gpu_check.md
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$(dirname "$REPORT")"

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo 'nvidia-smi: not found'
  $PY -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__)' 2>&1
  echo '```'
} > "$REPORT"

if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "No CUDA device: nothing to measure (the CUDA-only tests skip, the benchmarks need a GPU)." | tee -a "$REPORT"
  exit 0
fi

step() {  # step TITLE SECONDS COMMAND...: run with a timeout, its output (tail) into the report
  local title=$1 limit=$2; shift 2
  echo "== $title"
  local log; log=$(mktemp)
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  {
    echo; echo "## $title"; echo
    echo "\`$*\` (exit $rc$([ $rc -eq 124 ] && echo ', timed out'))"; echo
    echo '```'; tail -n 40 "$log"; echo '```'
  } >> "$REPORT"
  rm -f "$log"
}

step 'CUDA-only tests' 150 $PY -m pytest -q -p no:xdist -m 'not slow' -k cuda tests/test_device_sync.py tests/test_predict.py tests/test_train.py
for model in regnetx_002 regnety_032; do
  step "train step vs timm: $model, bf16, channels_last" 60 \
    $PY benchmarks/train_vs_timm.py --model $model --device cuda --batch-size 128 --img-size 224 --dtype bfloat16 --channels-last
  step "train step, compiled vs eager: $model, bf16, channels_last" 90 \
    $PY benchmarks/train_compile.py --model $model --device cuda --batch-size 128 --img-size 224 --amp bfloat16 --channels-last --rounds 3
done
step 'inference: eager, AMP, compile' 120 \
  $PY -m regzoo.benchmark --model regnetx_002,regnety_032 --batch-size 256 --dtype bfloat16 --channels-last --compile \
    --repeats 3 --min-seconds 3 --latency-repeats 0 --no-memory --markdown

echo "wrote $REPORT"
