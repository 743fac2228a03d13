#!/bin/bash
# Why mean teacher ends below supervised at 7 patients (cpu-small): runs at 7 patients, val only (mona train
# never reads test.list), into runs/mt-why/NAME_sSEED; a finished run is skipped, an interrupted one resumed.
# Usage: lane.sh NAME METHOD SEEDS [KEY=VALUE ...]
#   lane.sh consistency0 mean_teacher "0 1 2" mean_teacher.consistency=0  # same data stream and BatchNorm batches
#   lane.sh consistency1 mean_teacher "0 1 2" mean_teacher.consistency=1  # 10x the SSL4MIS weight
#   lane.sh supervised supervised "3 4 5"; lane.sh mean_teacher mean_teacher "3 4 5"  # seeds beyond the grid's
# Then: .venv/bin/python docs/results/2026-12-02-mean-teacher-7/summarise.py runs/mt-why
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
name=$1 method=$2 seeds=$3
shift 3
for seed in $seeds; do
  out=runs/mt-why/${name}_s$seed
  grep -qs '"iteration": 3000, "split": "val"' "$out/metrics.jsonl" && continue  # finished
  echo "=== $(date -u +%FT%TZ) $out"
  if [ -f "$out/last.pt" ]; then
    OMP_NUM_THREADS=1 .venv/bin/mona train --resume "$out" --no-progress || exit $?
  else
    OMP_NUM_THREADS=1 .venv/bin/mona train --data ../shared/data/ACDC --method "$method" --labeled 7 \
        --config cpu-small --seed "$seed" --out "$out" --no-progress "$@" || exit $?
  fi
done
