#!/bin/bash
# A longer cpu-small schedule, val only (mona train never reads test.list): runs of METHOD into
# runs/schedule/NAME_METHOD_lLABELED_sSEED; a run folder that exists is resumed (a finished one is skipped).
# Usage: lane.sh NAME METHOD "LABELED:SEED ..." [KEY=VALUE ...]
#   lane.sh it6000 mona "3:0" train.iterations=6000
# The 3000-iteration reference is the grid's own runs (docs/results/2026-12-02-acdc-cpu-small-3000/runs).
# Then: .venv/bin/python docs/results/2026-12-02-schedule/summarise.py
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
name=$1 method=$2 cells=$3
shift 3
for cell in $cells; do
  labeled=${cell%%:*} seed=${cell##*:}
  out=runs/schedule/${name}_${method}_l${labeled}_s$seed
  echo "=== $(date -u +%FT%TZ) $out"
  if [ -f "$out/stages.json" ]; then
    OMP_NUM_THREADS=1 .venv/bin/mona train --resume "$out" --no-progress || exit $?
  else
    OMP_NUM_THREADS=1 .venv/bin/mona train --data ../shared/data/ACDC --method "$method" --labeled "$labeled" \
        --config cpu-small --seed "$seed" --out "$out" --no-progress "$@" || exit $?
  fi
done
