#!/usr/bin/env bash
# One GPU check, about 8 minutes on one H100: the training benchmark at 256x256 with the
# paper's batches, a kernel profile of MONA stage 2, an fp16 smoke run, and the reduced
# protocol (128x128, 4+4, 3000 iterations; MONA 1000 pre-training + 3000 fine-tuning) on
# real ACDC for supervised, mean teacher and MONA at 3 and 7 labeled patients plus the
# fully supervised bound, all runs side by side on the one GPU, each scored on test.
#
#   bash benchmarks/gpu_check.sh ACDC_DIR OUT_DIR [DEADLINE_SECONDS]
#
# Runs still training at the deadline are stopped and scored on their best-on-val
# checkpoint so far (marked partial in results.json). OUT_DIR receives six files: gpu.txt,
# bench_256_paper.json, bench_128_4.json, profile.txt, results.json and runs.tar.gz (logs,
# configs, metrics and evaluations of every run; checkpoints stay in the work folder).
set -uo pipefail
data=${1:?ACDC dir}; out=${2:?output dir}; deadline=${3:-420}
work=$(mktemp -d)
mkdir -p "$out" "$work/runs"
py=${PYTHON:-python3}
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"

$py benchmarks/train_speed.py --size 256 --paper-batches --device cuda --amp --steps 20 --warmup 5 \
  --json "$out/bench_256_paper.json" 2>&1 | grep -v -i warn
$py benchmarks/train_speed.py --size 128 --batch 4 --device cuda --amp --steps 20 --warmup 5 \
  --json "$out/bench_128_4.json" 2>&1 | grep -v -i warn
$py -m benchmarks.profile_step --device cuda --size 256 --method mona_finetune > "$out/profile.txt" 2>&1

common=(--data "$data" --config cpu-small --device cuda --no-progress mona.representation_stride=1
        mona.pretrain_iterations=1000)
launch() { # name method labeled
  OMP_NUM_THREADS=2 $py -m mona train "${common[@]}" --method "$2" --labeled "$3" --out "$work/runs/$1" > "$work/runs/$1.log" 2>&1 &
}
launch sup7 supervised 7; launch mt7 mean_teacher 7; launch supall supervised all
launch sup3 supervised 3; launch mt3 mean_teacher 3; launch mona3 mona 3; launch mona7 mona 7
$py -m mona synth "$work/phantom" --patients 6 > /dev/null
$py -m mona train --data "$work/phantom" --method mona --labeled 1 --config demo --device cuda --no-progress \
  train.amp_dtype=fp16 train.iterations=60 mona.pretrain_iterations=30 --out "$work/runs/fp16" > "$work/runs/fp16.log" 2>&1

if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then  # 2-process data-parallel smoke run
  $py -m torch.distributed.run --standalone --nproc_per_node=2 -m mona train --data "$work/phantom" --method mona \
    --labeled 1 --config demo --device cuda --no-progress train.iterations=40 mona.pretrain_iterations=20 \
    --out "$work/runs/ddp2" > "$work/runs/ddp2.log" 2>&1
fi
while [ $(( $(date +%s) - start )) -lt "$deadline" ] && pgrep -f "mona train" > /dev/null; do sleep 5; done
pkill -INT -f "mona train"; sleep 3
$py benchmarks/collect_results.py "$work/runs" "$out/results.json" $(( $(date +%s) - start ))
tail -n 3 "$work"/runs/*.log
tar -C "$work" --exclude='*.pt' --exclude='tb' -czf "$out/runs.tar.gz" runs
