#!/usr/bin/env bash
# One tiny track model trained with a held-out learning curve on the shared cpu data's in-domain demos
# (validation: the id-val episodes, 512 fixed samples, every 200 steps). Resumes a cut run exactly.
# Usage: [TRAIN_SETS="id ood"] scripts/track_curve.sh OUT PRESET SEED STEPS [--set overrides ...]
#   e.g. scripts/track_curve.sh runs/curves/dense-s0 tiny-dense 0 4000 data.view_loss=no_motion
#   TRAIN_SETS: the shared data's training folders (default: id, the in-domain demos; "id ood" adds the videos)
set -euo pipefail
out=${1:?OUT}; preset=${2:?PRESET}; seed=${3:?SEED}; steps=${4:?STEPS}; shift 4
data=${DATA:-runs/shared-data/metaworld-cpu}
tm=${TRAJMOE:-.venv/bin/trajmoe}
export MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$out/validation.json" ] && { echo "done: $out"; exit 0; }
resume=(); [ -f "$out/state/latest.json" ] && resume=(--resume)
sets=(); for d in ${TRAIN_SETS:-id}; do sets+=("$data/$d"); done
$tm train track --preset "$preset" --data "${sets[@]}" --val "$data/id-val" --out "$out" "${resume[@]}" \
    --set seed="$seed" steps="$steps" batch_size=32 lr=1e-3 warmup_steps=30 eval_every=200 log_every=50 \
    ckpt_every=200 progress=false "$@"
