#!/bin/bash
# Copy a grid's finished runs (those with eval_test_best/summary.json), without weights, TensorBoard
# or locks, from GRID (default runs/grid-cpu-small) into HERE (default this folder), with grid.json,
# and print each added run's test Dice unless --no-scores is given (a grid still under way is not read).
# Usage: sync.sh [--no-scores] [GRID HERE]. Restore them into a new checkout with:
# mkdir -p runs/grid-cpu-small && cp -r docs/results/acdc-cpu-small/{grid.json,runs} runs/grid-cpu-small/
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
scores=1
[ "$1" = --no-scores ] && scores= && shift
grid=${1:-runs/grid-cpu-small} here=${2:-docs/results/acdc-cpu-small}
mkdir -p "$here/runs" && cp "$grid/grid.json" "$here/"
for summary in "$grid"/runs/*/eval_test_best/summary.json; do
  [ -f "$summary" ] || continue
  run=$(basename "$(dirname "$(dirname "$summary")")")
  [ -d "$here/runs/$run" ] && continue
  tar -C "$grid/runs" --exclude='*.pt' --exclude=tb --exclude=.lock -cf - "$run" | tar -C "$here/runs" -xf -
  [ -z "$scores" ] && echo "added $run" && continue
  python3 - "$summary" "$run" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
mean = summary["mean"]
print(f"added {sys.argv[2]}: test Dice {100 * mean['dice']:.1f}, HD95 {mean['hd95']:.1f}, best at iteration {summary['iteration']}")
PY
done
