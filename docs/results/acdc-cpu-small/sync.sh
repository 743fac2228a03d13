#!/bin/bash
# Copy the grid's finished runs (those with eval_test_best/summary.json), without weights, TensorBoard
# or locks, from runs/grid-cpu-small into this folder, with grid.json. Restore them into a new
# checkout with: mkdir -p runs/grid-cpu-small && cp -r docs/results/acdc-cpu-small/{grid.json,runs} runs/grid-cpu-small/
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
grid=runs/grid-cpu-small here=docs/results/acdc-cpu-small
mkdir -p "$here/runs" && cp "$grid/grid.json" "$here/"
for summary in "$grid"/runs/*/eval_test_best/summary.json; do
  run=$(basename "$(dirname "$(dirname "$summary")")")
  [ -d "$here/runs/$run" ] && continue
  tar -C "$grid/runs" --exclude='*.pt' --exclude=tb --exclude=.lock -cf - "$run" | tar -C "$here/runs" -xf -
  python3 - "$summary" "$run" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
mean = summary["mean"]
print(f"added {sys.argv[2]}: test Dice {100 * mean['dice']:.1f}, HD95 {mean['hd95']:.1f}, best at iteration {summary['iteration']}")
PY
done
