#!/usr/bin/env bash
# Everything a lent GPU should measure, in one call of under 10 minutes (issue #48, part B):
#   1. the machine (nvidia-smi, torch, CUDA);
#   2. the CUDA tests (`pytest -k cuda`: among them, no training step of any method waits for the GPU,
#      under torch.cuda.set_sync_debug_mode("error"));
#   3. the step benchmark of every method and stage (benchmarks/train_speed.py: supervised, mean teacher,
#      MONA stages 1 and 2, UniMatch, BCP and ABD stages 1 and 2) at 256x256 with the paper's batches in
#      bf16, then at 128x128 with 4+4 (cpu-small's shape);
#   4. kernel profiles of a MONA stage-2 and a mean-teacher step (benchmarks/profile_step.py);
#   5. with the time left, supervised, mean teacher, MONA stage 1 and UniMatch, each step compiled whole
#      into CUDA graphs (train_speed.py --compile-step: mode="reduce-overhead"; each step is one graph).
# Each part has its own time limit and the script goes on when one fails or times out; a part that
# did not finish says so in summary.txt. Everything goes to docs/results/gpu-DATE/ (or OUT_DIR):
# environment.txt, cuda_tests.txt, bench_256_paper.json, bench_128_4.json, profile.txt, summary.txt.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# DEVICE=cpu SIZE=32 STEPS=1 WARMUP=1 make a dry run of the script's logic on a CPU.
set -u
cd "$(dirname "$0")/.."
out=${1:-docs/results/gpu-$(date +%Y-%m-%d)}
device=${DEVICE:-cuda}; size=${SIZE:-256}; steps=${STEPS:-20}; warmup=${WARMUP:-5}
total_seconds=${TOTAL_SECONDS:-570}  # the compile trial uses what is left of it
py=${PYTHON:-python3}
start=$(date +%s)
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
export PYTHONUNBUFFERED=1

part() { # seconds name command...: run one part under a time limit, record how it ended, never stop the script
  local seconds=$1 name=$2; shift 2
  local began=$(date +%s)
  echo "== $name (limit ${seconds} s)"
  timeout --kill-after=10 "$seconds" "$@"
  local status=$?
  local verdict=ok
  [ $status -eq 124 ] || [ $status -eq 137 ] && verdict="timed out"
  [ $status -ne 0 ] && [ "$verdict" = ok ] && verdict="failed ($status)"
  echo "$name: $verdict in $(( $(date +%s) - began )) s" | tee -a "$summary"
}

speed=($py benchmarks/train_speed.py --device "$device" --amp --steps "$steps" --warmup "$warmup")
part 20 environment bash -c "(nvidia-smi || echo 'no nvidia-smi'; $py -c 'import torch; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available())') > '$out/environment.txt' 2>&1"
part 120 "CUDA tests" bash -c "$py -m pytest -q -p no:cacheprovider -k cuda tests > '$out/cuda_tests.txt' 2>&1"
part 200 "step benchmarks, ${size}px, paper batches" "${speed[@]}" --size "$size" --paper-batches \
  --json "$out/bench_${size}_paper.json"
part 90 "step benchmarks, 128px, 4+4" "${speed[@]}" --size 128 --batch 4 --json "$out/bench_128_4.json"
part 90 "profiles" bash -c "{ $py -m benchmarks.profile_step --device $device --size $size --method mona_finetune \
  --steps 3; $py -m benchmarks.profile_step --device $device --size $size --method mean_teacher --steps 3; } \
  > '$out/profile.txt' 2>&1"
left=$(( total_seconds - ($(date +%s) - start) ))
if [ "$left" -gt 40 ]; then
  part "$left" "compiled steps, supervised, mean teacher, MONA stage 1, UniMatch" "${speed[@]}" --size "$size" \
    --paper-batches --methods supervised,mean_teacher,mona_pretrain,unimatch --compile-step \
    --json "$out/bench_${size}_paper_compile_step.json"
else
  echo "compiled steps: skipped, ${left} s left" | tee -a "$summary"
fi
echo "== done in $(( $(date +%s) - start )) s; $out:"
ls "$out"
