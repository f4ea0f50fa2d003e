#!/usr/bin/env bash
# Reliability check, run by hand (not in CI; a few minutes on 2 cores): kill -9 at chosen and random
# moments for the track model, the policy, the planner and its GRPO fine-tuning, each resumed and
# compared bit for bit with an uninterrupted run; then bad inputs that must end in one-line errors.
# One line per case and a summary.   Usage: scripts/reliability.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MUJOCO_GL="${MUJOCO_GL:-egl}" HF_HUB_OFFLINE=1
exec nice -n 10 "$PY" scripts/reliability.py "$@"
