#!/usr/bin/env bash
# GPU smoke test (about 3-5 minutes, no network): the tiny Qwen2-Audio in bf16 on one CUDA GPU, a few
# GRPO steps under each engine - DDP, DeepSpeed ZeRO-2, ZeRO-3, ZeRO-3 with optimizer + parameter offload
# (the paper's) - printing step time, peak GPU memory, loss, reward and gradient norm per engine, and
# checking the engines against DDP on the first optimizer step. Every engine runs; any failure makes the exit non-zero.
#
#   scripts/gpu_smoke.sh [RUN_DIR]          (default: a fresh temporary folder)
#   ENGINES="ddp deepspeed_stage_3" scripts/gpu_smoke.sh
#
# Needs the project's environment (PY, default .venv/bin/python) with a CUDA build of torch and
# deepspeed; the offloaded run compiles DeepSpeed's CPU Adam on first use (g++ and ninja), or falls
# back to torch's AdamW with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RUN=${1:-$(mktemp -d /tmp/gpu_smoke.XXXXXX)}
ENGINES=${ENGINES:-"ddp deepspeed_stage_2 deepspeed_stage_3 deepspeed_stage_3_offload"}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$RUN"
echo "[gpu_smoke] run folder: $RUN"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, lightning, deepspeed; assert torch.cuda.is_available(), 'no CUDA device';
print('[gpu_smoke] torch', torch.__version__, 'lightning', lightning.__version__, 'deepspeed', deepspeed.__version__)"
t0=$(date +%s)
timeout 240 "$PY" -m r1aqa_pl demo-prepare --out "$RUN/demo" --n_train 48 --n_test 24 --warm_steps 20
failed=""
for engine in $ENGINES; do  # every engine runs; failures are listed at the end
  echo "[gpu_smoke] === $engine ==="
  timeout 300 "$PY" -m r1aqa_pl gpu-smoke run --strategy "$engine" --root "$RUN/demo" --out "$RUN/$engine" \
    || failed="$failed $engine"
done
"$PY" -m r1aqa_pl gpu-smoke compare "$RUN" || failed="$failed compare"
if [ -n "$failed" ]; then
  echo "[gpu_smoke] FAILED:$failed ($(( $(date +%s) - t0 )) s)"
  exit 1
fi
echo "[gpu_smoke] all engines OK in $(( $(date +%s) - t0 )) s"
