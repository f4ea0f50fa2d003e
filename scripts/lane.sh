#!/usr/bin/env bash
# A background lane: runs the lines of QUEUE (shell commands) one at a time; several lanes share one queue
# (a line is claimed atomically with mkdir in QUEUE.claims/). Lines added to QUEUE while lanes run are
# picked up; a claimed line is never run twice (delete its claim folder to rerun it). Blank lines and
# lines starting with # are skipped.   Usage: nohup nice -n 10 scripts/lane.sh runs/queue.txt > lane1.log &
set -uo pipefail
queue=${1:?QUEUE}; claims="$queue.claims"; mkdir -p "$claims"
while true; do
  picked=""
  n=0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    [[ -z "${line// }" || "$line" == \#* ]] && continue
    if mkdir "$claims/$n" 2>/dev/null; then picked="$line"; break; fi
  done < "$queue"
  [ -z "$picked" ] && { echo "$(date +%T) queue empty"; exit 0; }
  echo "$(date +%T) start [$n] $picked"
  bash -c "$picked"; rc=$?
  echo "$(date +%T) done  [$n] rc=$rc"
done
