#!/usr/bin/env bash
# One planner trained with a held-out EPDMS curve on the shared planner scenes (validation: runs/data/val,
# its own seeds, so the best checkpoint is not picked on the test scenes), then scored open loop on the
# test scenes (runs/data/test) into OUT.eval.json. Resumes a cut run exactly.
# Usage: scripts/planner_run.sh OUT PRESET SEED [--set overrides ...]
#   e.g. scripts/planner_run.sh runs/planners/moe-s0 cpu-moe 0 model.vocab_agent_features=true
set -euo pipefail
out=${1:?OUT}; preset=${2:?PRESET}; seed=${3:?SEED}; shift 3
data=${PLANNER_DATA:-runs/data}
tm=${TRAJMOE:-.venv/bin/trajmoe}
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$out/validation.json" ]; then
  resume=(); [ -f "$out/state/latest.json" ] && resume=(--resume)
  $tm train planner --data "$data/train" --preset "$preset" --val "$data/val" --out "$out" "${resume[@]}" \
      --no-progress --set seed="$seed" data.workers=1 ckpt_every=50 "$@"
fi
[ -f "$out.eval.json" ] || { $tm eval planner --run "$out/best" --data "$data/test" --no-baselines --json \
    | tail -1 > "$out.eval.json.tmp" && mv "$out.eval.json.tmp" "$out.eval.json"; }
python3 -c "import json,sys; p=json.load(open(sys.argv[1]))['open_loop']['planner']; print(sys.argv[1], 'EPDMS', round(p['EPDMS'], 3), {k: round(v['EPDMS'], 3) for k, v in p['per_scenario'].items()})" "$out.eval.json"
