#!/bin/bash
# The three runs the UniMatch decoder rule reads (README.md), as two lanes of one thread each, started together;
# run again to resume all three after an interruption (a machine that lost runs/ and .dev/ starts them anew).
#   lane 1: UniMatch's official script (benchmarks/peer_unimatch.sh) -> runs/peer-unimatch-l3
#   lane 2: the grid's unimatch_l3_s0 (mona's UNet) -> runs/grid-cpu-small-6000, then the same cell with the
#           peers' decoder (train_bilinear_decoder.py) -> .dev/unet/unimatch_l3_s0_bilinear
# Usage, from anywhere: lanes.sh UNIMATCH_GIT_DIR   (logs: runs/peer-unimatch-l3.out, runs/decision-lane2.log)
set -eu
REPO=$(cd "$1" && pwd)
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
here=docs/results/2026-12-07-peer-check grid=runs/grid-cpu-small-6000 bilinear=.dev/unet/unimatch_l3_s0_bilinear
mkdir -p runs .dev/unet
[ -d $grid/runs ] || { mkdir -p $grid && cp -r docs/results/acdc-cpu-small/{grid.json,runs} $grid/; }
nohup bash benchmarks/peer_unimatch.sh "$REPO" ../shared/data/ACDC runs/peer-unimatch-l3 3 >> runs/peer-unimatch-l3.out 2>&1 &
if [ -f $bilinear/last.pt ]; then start=(--resume $bilinear)
else start=(--data ../shared/data/ACDC --method unimatch --labeled 3 --config cpu-small --seed 0 --out $bilinear); fi
nohup bash -c "GRID=$grid OVERRIDES=train.iterations=6000 bash docs/results/acdc-cpu-small/lane.sh \
    '--methods unimatch --labeled 3 --seeds 0 --no-upper-bound' && OMP_NUM_THREADS=1 .venv/bin/python \
    $here/train_bilinear_decoder.py train ${start[*]} --no-progress" >> runs/decision-lane2.log 2>&1 &
echo "started: official UniMatch (runs/peer-unimatch-l3.out) and lane 2 (runs/decision-lane2.log)"
