#!/usr/bin/env bash
# Copy the small records of finished or running runs into results/<group>/<run>/ (committed: the figures in
# docs/results.md do not depend on a machine's runs/ surviving): config.json, metrics.jsonl,
# validation.json, best/eval.json, and a policy run's closed-loop evaluation RUN.eval.json.
# Usage: scripts/collect_results.sh GROUP RUN [RUN ...]
set -euo pipefail
group=${1:?GROUP}; shift
for run in "$@"; do
  [ -d "$run" ] || continue
  dst="results/$group/$(basename "$run")"; mkdir -p "$dst"
  for f in config.json metrics.jsonl validation.json mask_values.json; do [ -f "$run/$f" ] && cp "$run/$f" "$dst/"; done
  [ -f "$run/best/eval.json" ] && cp "$run/best/eval.json" "$dst/best_eval.json"
  [ -f "$run.eval.json" ] && cp "$run.eval.json" "$dst/rollouts.json"
done
echo "collected into results/$group"
