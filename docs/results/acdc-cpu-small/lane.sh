#!/bin/bash
# One grid lane: OMP_NUM_THREADS=1 mona reproduce for each SUBSET given (e.g. "--methods mona --labeled 3 --seeds 0,1"),
# then the whole grid, with no report (its test figures stay out of view until `mona report` once the grid is complete).
# Runs another lane holds (.lock) are skipped; stops at the first non-zero exit (Ctrl-C included).
# GRID (default runs/grid-cpu-small) is the grid folder; OVERRIDES (default none) are key=value settings for every run,
# e.g. GRID=runs/grid-cpu-small-3000 OVERRIDES=train.iterations=3000 for docs/results/2026-12-02-acdc-cpu-small-3000.
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)" || exit 1
for subset in "$@" "--methods supervised,mean_teacher,mona --labeled 1,3,7 --seeds 0,1,2"; do
  echo "=== $(date -u +%FT%TZ) lane: $subset"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 .venv/bin/mona reproduce --data ../shared/data/ACDC $subset --protocol cpu-small \
      --out "${GRID:-runs/grid-cpu-small}" --no-report $OVERRIDES || exit $?
done
