#!/usr/bin/env bash
# Fine-tune sim-rt1 on a recorded bag of a scene it never saw, and measure held-out next-frame error
# against the un-tuned reference (docs/BENCHMARKS.md "Fine-tuning sim-rt1 on a converted bag").
#
#   scripts/finetune_variant.sh [OUT=outputs/finetune_workshop] [STEPS=300]
#
# 1. record sim.scene=workshop (dark wood tables, a warm dim key light) into an MCAP bag, as a robot would
#    (compressed camera topic + command topic), and convert it with data-from-bag;
# 2. simulate a held-out workshop set with a seed neither saw (RT-1 format, with world_vector for eval);
# 3. evaluate sim-rt1 as shipped on it; fine-tune its dynamics (tokenizer and LAM frozen: train=finetune)
#    and, second, its tokenizer then its dynamics on the tuned tokenizer; evaluate both the same way.
# Every step skips what a previous run already finished, so a cut run continues.
set -euo pipefail
OUT=${1:-outputs/finetune_workshop}
STEPS=${2:-300}
BIN=${BIN:-.venv/bin}
export MUJOCO_GL=${MUJOCO_GL:-egl}
EVAL="data.val_fraction=1 eval.temperature=0.5 eval.max_clips=24 eval.plan_episodes=0 eval.grid_contexts=1"

[ -f "$OUT/bag/metadata.yaml" ] || $BIN/genie-robot sim-to-bag bag="$OUT/bag" sim.scene=workshop sim.seed=2001 \
    sim.episodes=64 record.images=[compressed] record.jitter_s=0.01
DATA="$OUT/data/robot_episodes/1.0.0"
[ -f "$DATA/dataset_info.json" ] || $BIN/genie-robot data-from-bag model=sim_rt1 bag="$OUT/bag" \
    image_topic=/head_camera/image_raw/compressed action_topic=/arm/command out="$OUT/data"
HELD="$OUT/heldout/fractal20220817_data/0.1.0"
$BIN/genie-robot sim sim.out="$OUT/heldout" sim.scene=workshop sim.seed=2002 sim.episodes=16 sim.num_shards=1

[ -f "$OUT/eval/reference/eval.json" ] || $BIN/genie-robot eval ckpt=sim-rt1 data.path="$HELD" $EVAL \
    eval.out="$OUT/eval/reference"

# (a) dynamics only; tokenizer and LAM stay the reference's.
TRAIN="$BIN/genie-robot train train=finetune model=sim_rt1 data.path=$DATA data.action_keys=[] data.batch_size=4"
RUN_A="$OUT/runs/dynamics_only"
$TRAIN stage=dynamics train.steps="$STEPS" train.out_dir="$RUN_A" train.resume=$([ -d "$RUN_A/dynamics/checkpoints" ] && echo true || echo false)
cp -n genie_robot/references/sim-rt1/adapter.json "$RUN_A/" 2>/dev/null || true
[ -e "$RUN_A/tokenizer" ] || ln -s "$(realpath genie_robot/references/sim-rt1/tokenizer)" "$RUN_A/tokenizer"
[ -e "$RUN_A/lam" ] || ln -s "$(realpath genie_robot/references/sim-rt1/lam)" "$RUN_A/lam"
[ -f "$OUT/eval/dynamics_only/eval.json" ] || $BIN/genie-robot eval ckpt="$RUN_A" data.path="$HELD" $EVAL \
    eval.out="$OUT/eval/dynamics_only"

# (b) tokenizer tuned, then dynamics on it; the LAM stays the reference's.
RUN_B="$OUT/runs/tokenizer_and_dynamics"
$TRAIN stage=tokenizer train.steps="$STEPS" train.out_dir="$RUN_B" train.resume=$([ -d "$RUN_B/tokenizer/checkpoints" ] && echo true || echo false)
$TRAIN stage=dynamics train.steps="$STEPS" train.out_dir="$RUN_B" train.resume=$([ -d "$RUN_B/dynamics/checkpoints" ] && echo true || echo false)
cp -n genie_robot/references/sim-rt1/adapter.json "$RUN_B/" 2>/dev/null || true
[ -e "$RUN_B/lam" ] || ln -s "$(realpath genie_robot/references/sim-rt1/lam)" "$RUN_B/lam"
[ -f "$OUT/eval/tokenizer_and_dynamics/eval.json" ] || $BIN/genie-robot eval ckpt="$RUN_B" data.path="$HELD" $EVAL \
    eval.out="$OUT/eval/tokenizer_and_dynamics"
echo "done: $OUT/eval/*/eval.json"
