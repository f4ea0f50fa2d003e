#!/usr/bin/env bash
# Copy the small records of finished or running runs into results/<group>/<run>/ (committed: the figures in
# docs/results.md do not depend on a machine's runs/ surviving): config.json, metrics.jsonl,
# validation.json, best/eval.json, and a policy run's closed-loop evaluation RUN.eval.json (as rollouts.json;
# a planner's test-set evaluation RUN.eval.json as test_eval.json).
# Usage: scripts/collect_results.sh GROUP RUN [RUN ...]
set -euo pipefail
group=${1:?GROUP}; shift
for run in "$@"; do
  [ -d "$run" ] || continue
  dst="results/$group/$(basename "$run")"; mkdir -p "$dst"
  for f in config.json metrics.jsonl validation.json mask_values.json; do [ -f "$run/$f" ] && cp "$run/$f" "$dst/"; done
  [ -f "$run/best/eval.json" ] && cp "$run/best/eval.json" "$dst/best_eval.json"
  if [ -f "$run.eval.json" ]; then
    if grep -q '"open_loop"' "$run.eval.json"; then cp "$run.eval.json" "$dst/test_eval.json"; else cp "$run.eval.json" "$dst/rollouts.json"; fi
  fi
done
echo "collected into results/$group"
