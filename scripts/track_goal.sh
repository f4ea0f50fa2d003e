#!/usr/bin/env bash
# Track models vs the no-motion baseline on `make demo`'s data: 3 seeds x {tiny-dense, tiny-tramoe},
# 750 steps x 32 (~4 min per model on 2 idle cores), held-out ID episodes (4 per task, unseen
# variations). Prints one line per run; docs/results.md ("Track models that learn") has the figures.
# Usage: scripts/track_goal.sh DATA_DIR OUT_DIR   (DATA_DIR from `make demo`: runs/demo/data)
set -euo pipefail
data=${1:?DATA_DIR}; out=${2:?OUT_DIR}
tm=${TRAJMOE:-.venv/bin/trajmoe}
export MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
$tm data metaworld --tasks drawer-open-v3,button-press-topdown-v3,handle-press-v3 --episodes 4 \
    --views agentview,eye_in_hand --camera corner --domain id --variation-seed 600 --max-steps 200 \
    --workers 2 --no-progress --out "$data/mw-val4"
for seed in 0 1 2; do for preset in tiny-dense tiny-tramoe; do
  run="$out/$preset-s$seed"
  [ -f "$run/model.safetensors" ] || { rm -rf "$run"; $tm train track --preset $preset --data "$data/mw/id" "$data/mw/ood" \
      --out "$run" --set steps=750 batch_size=32 lr=1e-3 warmup_steps=40 seed=$seed progress=false; }
  $tm eval track --run "$run" --data "$data/mw-val4" --max-samples 512 --json | tail -1 > "$run.eval.json"
  python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']['overall']; print(sys.argv[2], 'MSE %.3e (no-motion %.3e, x%.3f)  ADE %.2f px (no-motion %.2f, x%.3f)' % (m['track_mse'], m['track_mse_static'], m['track_mse']/m['track_mse_static'], m['ade_px'], m['ade_px_static'], m['ade_px']/m['ade_px_static']))" "$run.eval.json" "$preset-s$seed"
done; done
