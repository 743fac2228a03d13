#!/bin/bash
# L_eqv's pixel mask at 3 and 7 patients (cpu-small), val only (mona train never reads test.list):
# MONA runs into runs/eqv-mask/NAME_lLABELED_sSEED; a finished run is skipped, an interrupted one resumed.
# Usage: lane.sh NAME "LABELED:SEED ..." [KEY=VALUE ...]
#   lane.sh balanced "7:0 7:1" mona.eqv_pixels=balanced
#   lane.sh balanced "3:0 3:1" mona.eqv_pixels=balanced
# The spec's `foreground` arm is the grid's own runs (docs/results/acdc-cpu-small/runs/mona_l*_s*).
# Then: .venv/bin/python docs/results/2026-12-02-eqv-mask/summarise.py
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
name=$1 cells=$2
shift 2
for cell in $cells; do
  labeled=${cell%%:*} seed=${cell##*:}
  out=runs/eqv-mask/${name}_l${labeled}_s$seed
  grep -qs '"iteration": 3000, "split": "val"' "$out/finetune/metrics.jsonl" && continue  # finished
  echo "=== $(date -u +%FT%TZ) $out"
  if [ -f "$out/stages.json" ]; then
    OMP_NUM_THREADS=1 .venv/bin/mona train --resume "$out" --no-progress || exit $?
  else
    OMP_NUM_THREADS=1 .venv/bin/mona train --data ../shared/data/ACDC --method mona --labeled "$labeled" \
        --config cpu-small --seed "$seed" --out "$out" --no-progress "$@" || exit $?
  fi
done
