#!/usr/bin/env bash
# One cpu-preset policy on the shared cpu data's in-domain demos, then closed-loop success of its best
# checkpoint (held-out action MSE on id-val picks it; oracle runs, whose id-val episodes carry no oracle
# tracks, use the last unless ORACLE_VAL names episodes that carry them) on held-out variations: 6 tasks x
# EPISODES (ROLLOUTS=0 skips them: a training-only diagnostic). Resumes a cut run exactly.
# Usage: scripts/policy_run.sh OUT CONDITIONING SEED STEPS [TRACK_RUN|-] [--set overrides ...]
#   e.g. scripts/policy_run.sh runs/policies/bc-s0 none 0 3000 -
set -euo pipefail
out=${1:?OUT}; cond=${2:?CONDITIONING}; seed=${3:?SEED}; steps=${4:?STEPS}; track=${5:--}; shift 5 || shift $#
data=${DATA:-runs/shared-data/metaworld-cpu}
episodes=${EPISODES:-10}
tm=${TRAJMOE:-.venv/bin/trajmoe}
export MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$out/model.safetensors" ] || [ ! -f "$out/state/latest.json" ] || \
   ! python3 -c "import json,sys; s=json.load(open('$out/state/latest.json'))['step']; sys.exit(s < $steps)"; then
  resume=(); [ -f "$out/state/latest.json" ] && resume=(--resume)
  trk=(); [ "$track" != "-" ] && trk=(--track-run "$track")
  val=(--val "$data/id-val")
  if [ "$cond" = "oracle" ]; then val=(); [ -n "${ORACLE_VAL:-}" ] && val=(--val "$ORACLE_VAL"); fi
  $tm train policy --preset cpu --conditioning "$cond" "${trk[@]}" --data "$data/id" "${val[@]}" --out "$out" \
      "${resume[@]}" --set seed="$seed" steps="$steps" batch_size=16 eval_every=250 ckpt_every=250 log_every=50 \
      progress=false "$@"
fi
[ "${ROLLOUTS:-1}" = 0 ] && exit 0
pick="$out/best"; [ -f "$pick/model.safetensors" ] || pick="$out"
[ -f "$out.eval.json" ] || $tm eval policy --run "$pick" --episodes "$episodes" --max-steps 150 --workers 1 --json \
    | tail -1 > "$out.eval.json.tmp" && mv "$out.eval.json.tmp" "$out.eval.json"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1], {k: r[k] for k in r if k in ('success_rate','successes','episodes','overall')})" "$out.eval.json"
