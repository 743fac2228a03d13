#!/usr/bin/env bash
# One GPU check in under 10 minutes on one H100, in this order so that a broken CUDA path
# costs seconds, not the session:
#   1. smoke runs on the phantom (MONA with fp16 + gradient scaler, mean teacher); stop on failure;
#   2. the reduced protocol on real ACDC (`--config cpu-small`: 128x128, 4+4, 3000 iterations;
#      MONA 1000 pre-training + 3000 fine-tuning) for supervised, mean teacher and MONA at 3
#      and 7 labeled patients plus the fully supervised bound, side by side, two CPU threads
#      each, with the CUDA tests alongside; runs still training at the deadline are stopped
#      and scored on their best-on-val checkpoint so far (marked partial);
#   3. every run scored on test (best on val and last);
#   4. on the then idle GPU: the training benchmark at 256x256 with the paper's batches
#      (and with cuDNN's algorithm search, for comparison), at 128x128 4+4, kernel profiles
#      of MONA stage 2 and mean teacher, a 2-process DDP run when 2 GPUs exist, and, with
#      the time left (TOTAL_SECONDS, default 570, minus what was used), the benchmark of
#      supervised and mean teacher with torch.compile'd UNets.
#
#   bash benchmarks/gpu_check.sh ACDC_DIR OUT_DIR [ACDC_SECONDS, default 300]
#
# DEVICE=cpu ITERATIONS=20 PRETRAIN_ITERATIONS=10 BENCH_SIZE=64 BENCH_STEPS=2 make a quick dry run
# of the script's logic on a CPU (ACDC_DIR may then be a `mona synth` phantom of 10 patients).
# OUT_DIR receives bench_*.json (four), profile.txt, results.json and runs.tar.gz (logs,
# configs, metrics, evaluations and the CUDA tests' output; checkpoints stay behind).
set -uo pipefail
data=${1:?ACDC dir}; out=${2:?output dir}; acdc_seconds=${3:-300}
device=${DEVICE:-cuda}; iterations=${ITERATIONS:-3000}; pretrain=${PRETRAIN_ITERATIONS:-1000}
script_start=$(date +%s); total_seconds=${TOTAL_SECONDS:-570}  # the compile trial uses what is left
work=$(mktemp -d)
mkdir -p "$out" "$work/runs"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi") 
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== 1. smoke runs"
smoke_dtype=$([ "$device" = cuda ] && echo fp16 || echo bf16)
$py -m mona synth "$work/phantom" --patients 6 > /dev/null
$py -m mona train --data "$work/phantom" --method mona --labeled 1 --config demo --device "$device" --no-progress \
  train.amp_dtype=$smoke_dtype train.iterations=20 mona.pretrain_iterations=10 train.val_every=10 \
  --out "$work/runs/smoke_fp16" > "$work/runs/smoke_fp16.log" 2>&1 &
smoke_mona=$!
$py -m mona train --data "$work/phantom" --method mean_teacher --labeled 1 --config demo --device "$device" --no-progress \
  train.iterations=20 train.val_every=10 --out "$work/runs/smoke_mt" > "$work/runs/smoke_mt.log" 2>&1
status_mt=$?
wait $smoke_mona; status_mona=$?
tail -n 2 "$work"/runs/smoke_*.log
if [ $status_mt -ne 0 ] || [ $status_mona -ne 0 ]; then
  echo "smoke runs failed (mean teacher $status_mt, MONA fp16 $status_mona)"
  cat "$work"/runs/smoke_*.log | tail -n 40
  exit 1
fi

echo "== 2. real ACDC, reduced protocol, ${acdc_seconds} s"
start=$(date +%s)
common=(--data "$data" --config cpu-small --device "$device" --no-progress train.iterations="$iterations"
        mona.pretrain_iterations="$pretrain")
runs=()  # the PIDs of the runs this script started: only they are stopped at the deadline
launch() { # name method labeled
  OMP_NUM_THREADS=2 $py -m mona train "${common[@]}" --method "$2" --labeled "$3" --out "$work/runs/$1" > "$work/runs/$1.log" 2>&1 &
  runs+=($!)
}
running() { for pid in "${runs[@]}"; do kill -0 "$pid" 2> /dev/null && return 0; done; return 1; }
launch mona7 mona 7; launch mona3 mona 3
launch sup7 supervised 7; launch mt7 mean_teacher 7; launch supall supervised all
launch sup3 supervised 3; launch mt3 mean_teacher 3
OMP_NUM_THREADS=2 timeout 120 $py -m pytest -q -p no:cacheprovider -k cuda tests > "$work/runs/cuda_tests.txt" 2>&1
tail -n 2 "$work/runs/cuda_tests.txt"
while [ $(( $(date +%s) - start )) -lt "$acdc_seconds" ] && running; do sleep 3; done
kill "${runs[@]}" 2> /dev/null; sleep 4; kill -9 "${runs[@]}" 2> /dev/null  # checkpoints are written atomically
acdc_wall=$(( $(date +%s) - start ))
tail -n 2 "$work"/runs/{mona,sup,mt}*.log

echo "== 3. test scores (ACDC wall ${acdc_wall} s)"
rm -rf "$work/runs/smoke_fp16" "$work/runs/smoke_mt"
timeout 150 $py benchmarks/collect_results.py "$work/runs" "$out/results.json" "$acdc_wall"
tar -C "$work" --exclude='*.pt' --exclude='tb' -czf "$out/runs.tar.gz" runs

echo "== 4. benchmarks"
size=${BENCH_SIZE:-256}; steps=${BENCH_STEPS:-20}
speed=($py benchmarks/train_speed.py --device "$device" --amp --steps "$steps" --warmup 5)
bench=(timeout 90 "${speed[@]}")
"${bench[@]}" --size "$size" --paper-batches --json "$out/bench_256_paper.json" 2>&1 | grep -v -i warn
"${bench[@]}" --size "$size" --paper-batches --methods mean_teacher,mona_finetune --cudnn-benchmark \
  --json "$out/bench_256_paper_cudnn_benchmark.json" 2>&1 | grep -v -i warn
"${bench[@]}" --size 128 --batch 4 --json "$out/bench_128_4.json" 2>&1 | grep -v -i warn
{ timeout 60 $py -m benchmarks.profile_step --device "$device" --size "$size" --method mona_finetune --steps 3
  timeout 45 $py -m benchmarks.profile_step --device "$device" --size "$size" --method mean_teacher --steps 3
} > "$out/profile.txt" 2>&1
grep -E "ms/iter|Self CUDA time total" "$out/profile.txt"
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  timeout 90 $py -m torch.distributed.run --standalone --nproc_per_node=2 -m mona train --data "$work/phantom" \
    --method mona --labeled 1 --config demo --device "$device" --no-progress train.iterations=40 \
    mona.pretrain_iterations=20 --out "$work/ddp2" 2>&1 | tail -n 3
fi
left=$(( total_seconds - ($(date +%s) - script_start) ))
[ "$left" -gt 30 ] && timeout "$left" "${speed[@]}" --size "$size" --paper-batches --methods supervised,mean_teacher --compile --json "$out/bench_256_paper_compile.json" \
  2>&1 | grep -v -i warn | tail -n 4
echo "== done"
