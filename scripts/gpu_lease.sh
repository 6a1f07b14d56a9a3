#!/usr/bin/env bash
# What one lent GPU call runs (docs/REFERENCE_sim-rt1.md and docs/BENCHMARKS.md name it): the reference's
# dynamics variants trained side by side from tokenized clips (scripts/train_variants.py), then the GPU
# benchmark (scripts/bench_gpu.py) on rt1_2.5b, then onnxruntime's CUDA and TensorRT providers on the shipped
# reference's shape, each inside its own share of the call (0 skips one). The GPU machine has torch but no
# registry: the pure-Python packages it lacks (hydra-core, omegaconf, antlr4) come as wheels in .whl/,
# onnxruntime-gpu in the parts under .ortgpu/ that earlier calls carried one by one, the tokenized clips in
# outputs/tokens/ (scripts/device_payload.py prepares .whl/ and .ortgpu/; docs/BENCHMARKS.md, "The GPU path").
#
#   OUT=<dir for results> TRAIN_S=330 BENCH_S=150 ORT_S=0 scripts/gpu_lease.sh
#
# Results in $OUT (at most 8 files: a lease returns 8): variants.jsonl (one line per variant), <variant>.tar.*
# (its last checkpoint's weights, config and trainer state, its metrics, TensorBoard log and evaluation
# pictures, the runs' logs; split into 15 MiB parts), bench_gpu.jsonl, bench_ort.jsonl, run.log (the device,
# stderr).
set -u
: "${OUT:?set OUT to a directory for the results}"
TRAIN_S=${TRAIN_S:-330}
BENCH_S=${BENCH_S:-150}
ORT_S=${ORT_S:-0}
BENCH_BATCHES=${BENCH_BATCHES-1,16}   # set and empty: rt1_2.5b's training step alone
TOKENS=${TOKENS:-outputs/tokens/sim_rt1.npz}
BATCH=${BATCH:-32}           # clips a step
PROBE_STEPS=${PROBE_STEPS:-40}
VARIANTS=${VARIANTS:-/tmp/variants}
REF=genie_robot/references/sim-rt1
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD:$PWD/export
fi
export PYTHONUNBUFFERED=1
LOG="$OUT/run.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$LOG" 2>&1
if [ -d .ortgpu ]; then  # onnxruntime-gpu, shadowing the image's CPU build
  python3 scripts/device_payload.py join .ortgpu --into /tmp/site >> "$LOG" 2>&1 || { cat "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD:$PWD/export
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" >> "$LOG" 2>&1
fi

# The dynamics variants: Genie's categorical over codes (ids) and the cosine regression (code_vector, the 8 x 256
# shape the fifth and sixth releases ship; the CPU-trained releases before had 4 x 128), $BATCH clips a step.
[ "$TRAIN_S" -gt 0 ] && timeout $((TRAIN_S + 60)) python3 scripts/train_variants.py --out "$VARIANTS" --budget-s "$TRAIN_S" \
  --probe-steps "$PROBE_STEPS" \
  --variant ids="model.dynamics.target=ids model.dynamics.transformer.d_model=192 model.dynamics.transformer.num_layers=8 model.dynamics.transformer.num_heads=6" \
  --variant cv="model.dynamics.target=code_vector model.dynamics.transformer.d_model=256 model.dynamics.transformer.num_layers=8 model.dynamics.transformer.num_heads=8" \
  -- model=sim_rt1 train=reference stage=dynamics "data.tokens=$TOKENS" "data.batch_size=$BATCH" \
  "train.tokenizer_ckpt=$REF/tokenizer" "train.lam_ckpt=$REF/lam" train.optim.dynamics.lr=1e-3 \
  train.optim.dynamics.warmup_steps=300 > "$OUT/variants.jsonl" 2>> "$LOG"
[ "$TRAIN_S" -gt 0 ] && cp "$VARIANTS/variants.json" "$VARIANTS/logs/" 2>> "$LOG"
for run in "$VARIANTS"/*/; do
  [ -d "$run" ] || continue
  name=$(basename "$run")
  [ "$name" = probe ] || [ "$name" = logs ] && continue
  ckpt=$(ls -d "$run"dynamics/checkpoints/step_* 2>/dev/null | tail -1)
  [ -n "$ckpt" ] || continue
  tar -C "$VARIANTS" -cf - --exclude=optimizer.safetensors "${ckpt#"$VARIANTS"/}" "$name/dynamics/metrics.jsonl" \
    "$name/dynamics/tb" "$name/dynamics/samples" $(cd "$VARIANTS" && ls "$name"/dynamics/eval.json 2>/dev/null) \
    logs | split -b 15M - "$OUT/$name.tar."
done

if [ "$BENCH_S" -gt 0 ]; then
  timeout "$BENCH_S" python3 scripts/bench_gpu.py --model rt1_2.5b --batches "$BENCH_BATCHES" --steps 25 \
    --repeats 2 > "$OUT/bench_gpu.jsonl" 2>> "$LOG"
  echo "bench exit $?" >> "$LOG"
fi
# onnxruntime on the shipped reference's shape (sim_rt1, random weights): exporting rt1_2.5b's graphs alone would
# take much of a lease; torch's rollouts at the same shape come in the same file for the comparison.
if [ "$ORT_S" -gt 0 ]; then
  timeout "$ORT_S" python3 scripts/bench_gpu.py --model sim_rt1 --onnx --batches 1,16 --steps 25 --repeats 3 \
    --train-batch 0 > "$OUT/bench_ort.jsonl" 2>> "$LOG"
  echo "ort bench exit $?" >> "$LOG"
fi
ls -la "$OUT"
