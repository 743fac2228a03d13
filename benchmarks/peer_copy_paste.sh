#!/usr/bin/env bash
# BCP's or ABD's official ACDC script on the CPU at mona's `cpu-small` settings, to compare its val curve with
# `mona train --method bcp|abd` (issue #45, "checked against the official code").
# Usage: [PRE_ITERATIONS=2000 ITERATIONS=6000] peer_copy_paste.sh bcp|abd GIT_DIR DATA_DIR OUT [LABELED] [SEED]
#   GIT_DIR   a clone or mirror of DeepMed-Lab-ECNU/BCP (commit 7879f98 is read) or chy-upc/ABD (4efd525),
#             e.g. the search tool's `fetch`
#   DATA_DIR  ACDC in the SSL4MIS layout (its path must contain "ACDC": both key their slice counts on it)
#   OUT       a new folder: the peer's code and its run; the log of both stages is printed at the end
# Then: python benchmarks/peer_curves.py LOG RUN
#
# The shim touches no line of the method. It removes `.cuda()` (CPU); num_workers 0 (one core); stubs
# torchvision's Compose, ToTensor and ColorJitter (PyPI's torchvision does not import beside the CPU build of
# torch 2.13; the stub's ColorJitter on a float greyscale tensor is torchvision's: brightness clamp(f x, 0, 1)
# and contrast clamp(f x + (1 - f) mean(x), 0, 1) with f ~ U(1 - s, 1 + s), the four operations in a random
# order, saturation and hue returning a one-channel image unchanged); the 128 px shape, which the argparse
# `type=list` options cannot take from the command line, in the training script and its validation (whose
# default, 256, would validate at another resolution than the one trained); ABD's hard-coded /data/chy_data
# folders, made relative; and cpu-small's batch and lengths on the command line: 8 slices (4 labeled,
# sub-batches of 2), 2000 + 6000 iterations (the code's 10000 : 30000), ABD's displacement patches 32 px
# (its 4 x 4 grid at 128 px).
set -eu
METHOD=$1; REPO=$2; DATA=$(cd "$3" && pwd); OUT=$4; LABELED=${5:-3}; SEED=${6:-0}
case $METHOD in
  bcp) COMMIT=7879f988872f561231f73eecd5b4e232e54fa2bd SCRIPT=ACDC_BCP_train.py VAL=utils/val_2d.py
       EXTRA=() LOG=model/BCP/ACDC_peer_${LABELED}_labeled/pre_train/log.txt ;;
  abd) COMMIT=4efd525e052c6e3601c29c1abaa4648de81cf206 SCRIPT=train_ACDC_BCP.py VAL=val_2D.py
       EXTRA=(--patch_size 32) LOG=model/BCP/ACDC_peer_${LABELED}_labeled/pre_train/log.txt ;;
  *) echo "method must be bcp or abd, not $METHOD" >&2; exit 2 ;;
esac
. "$(dirname "$0")/peer_venv.sh"  # sets PV
mkdir "$OUT"; OUT=$(cd "$OUT" && pwd)
git -C "$REPO" archive "$COMMIT" code 2>/dev/null | tar -x -C "$OUT"  # blobs outside code/ may be absent from a mirror
[ -f "$OUT/code/$SCRIPT" ] || { echo "no code/$SCRIPT at $COMMIT in $REPO" >&2; exit 1; }
cd "$OUT/code"
grep -rl "\.cuda()" . | xargs sed -i 's/\.cuda()//g'
mkdir -p torchvision
printf 'from . import transforms\n' > torchvision/__init__.py
cat > torchvision/transforms.py <<'PY'
import torch


class Compose:
    def __init__(self, ts): self.ts = ts
    def __call__(self, x):
        for t in self.ts: x = t(x)
        return x


class ToTensor:
    def __call__(self, array):
        tensor = torch.from_numpy(array)
        return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)


class ColorJitter:
    def __init__(self, brightness, contrast, saturation, hue):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, image):
        draw = lambda s: float(torch.empty(1).uniform_(1 - s, 1 + s))
        factors = [draw(self.brightness), draw(self.contrast), draw(self.saturation), None]
        for index in torch.randperm(4).tolist():
            if index == 0:
                image = (factors[0] * image).clamp(0, 1)
            elif index == 1:
                image = (factors[1] * image + (1 - factors[1]) * image.mean()).clamp(0, 1)
        return image
PY
sed -i -e 's/num_workers=[0-9]*/num_workers=0/g' -e 's/default=\[256, 256\]/default=[128, 128]/' \
    -e 's#/data/chy_data/ABD-main/model#./model#' \
    -e "s#^\(\s*\)shutil.copy('/data/chy_data/.*#\1pass#" "$SCRIPT"
sed -i 's/patch_size=\[256, 256\]/patch_size=[128, 128]/' "$VAL"
OMP_NUM_THREADS=1 "$PV/bin/python" "$SCRIPT" --root_path "$DATA" --exp peer --labelnum "$LABELED" \
  --batch_size 8 --labeled_bs 4 --pre_iterations "${PRE_ITERATIONS:-2000}" --max_iterations "${ITERATIONS:-6000}" \
  --seed "$SEED" "${EXTRA[@]}" > "$OUT/stdout.log" 2>&1
echo "done: $OUT/code/$LOG"
