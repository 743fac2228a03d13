#!/usr/bin/env bash
# BCP's official ACDC script on the CPU at mona's `cpu-small` settings, to compare its val curve with
# `mona train --method bcp` (issue #45, "checked against the official code").
# Usage: [PRE_ITERATIONS=2000 ITERATIONS=6000] peer_bcp.sh BCP_GIT_DIR DATA_DIR OUT [LABELED] [SEED]
#   BCP_GIT_DIR  a clone or mirror of DeepMed-Lab-ECNU/BCP (e.g. the search tool's `fetch`); commit 7879f98 is read
#   DATA_DIR     ACDC in the SSL4MIS layout (its path must contain "ACDC": BCP keys its slice counts on it)
#   OUT          a new folder: the peer's code and its run (OUT/code/model/.../pre_train/log.txt: both stages' log)
# Then: python benchmarks/peer_curves.py OUT/code/model/BCP/ACDC_peer_3_labeled/pre_train/log.txt RUN
#
# The shim touches no line of the method. It removes `.cuda()` (CPU); num_workers 0 (one core); a stub for
# torchvision.transforms.Compose (its only torchvision use: PyPI's torchvision does not import beside the
# CPU build of torch 2.13); the 128 px shape, which `--patch_size` (an argparse `type=list`) cannot take
# from the command line, in the training script and in val_2d.py (its default, 256, would validate at
# another resolution than the one trained); and cpu-small's batch and lengths on the command line:
# 8 slices (4 labeled, sub-batches of 2), 2000 + 6000 iterations (the code's 10000 : 30000).
set -eu
REPO=$1; DATA=$(cd "$2" && pwd); OUT=$3; LABELED=${4:-3}; SEED=${5:-0}
COMMIT=7879f988872f561231f73eecd5b4e232e54fa2bd
PV=${PEERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mona-peers}
if [ ! -x "$PV/bin/python" ]; then
  python3 -m venv "$PV" >/dev/null
  "$PV/bin/pip" install -q torch==2.13.0 >/dev/null 2>&1
  "$PV/bin/pip" install -q opencv-python-headless tensorboardX medpy h5py scipy matplotlib pillow tqdm scikit-image \
    imageio einops >"$PV/install.log" 2>&1 || { echo "peer venv install failed: $(tail -1 "$PV/install.log")" >&2; exit 1; }
fi
mkdir "$OUT"; OUT=$(cd "$OUT" && pwd)
git -C "$REPO" archive "$COMMIT" code 2>/dev/null | tar -x -C "$OUT"  # blobs outside code/ may be absent from a mirror
[ -f "$OUT/code/ACDC_BCP_train.py" ] || { echo "no code/ACDC_BCP_train.py at $COMMIT in $REPO" >&2; exit 1; }
cd "$OUT/code"
grep -rl "\.cuda()" . | xargs sed -i 's/\.cuda()//g'
mkdir -p torchvision
printf 'from . import transforms\n' > torchvision/__init__.py
cat > torchvision/transforms.py <<'PY'
class Compose:
    def __init__(self, ts): self.ts = ts
    def __call__(self, x):
        for t in self.ts: x = t(x)
        return x
PY
sed -i -e 's/num_workers=4/num_workers=0/' -e 's/default=\[256, 256\]/default=[128, 128]/' ACDC_BCP_train.py
sed -i 's/patch_size=\[256, 256\]/patch_size=[128, 128]/' utils/val_2d.py
OMP_NUM_THREADS=1 "$PV/bin/python" ACDC_BCP_train.py --root_path "$DATA" --exp peer --labelnum "$LABELED" \
  --batch_size 8 --labeled_bs 4 --pre_iterations "${PRE_ITERATIONS:-2000}" --max_iterations "${ITERATIONS:-6000}" --seed "$SEED" > "$OUT/stdout.log" 2>&1
echo "done: $OUT/code/model/BCP/ACDC_peer_${LABELED}_labeled/pre_train/log.txt"
