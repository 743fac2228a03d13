#!/usr/bin/env bash
# UniMatch's official medical script on the CPU at mona's `cpu-small` settings, to compare its val curve with
# `mona train --method unimatch` (issue #45, "checked against the official code").
# Usage: [EPOCHS=19 UNLABELED_LINES=0] peer_unimatch.sh UNIMATCH_GIT_DIR DATA_DIR OUT [LABELED]
#   UNIMATCH_GIT_DIR  a clone or mirror of LiheYoung/UniMatch (e.g. the search tool's `fetch`); commit 0324f3d is read
#   DATA_DIR          ACDC in the SSL4MIS layout
#   OUT               a new folder: the peer's code, its run and its log (OUT/run.log); an OUT of an
#                     interrupted run resumes it (the script restarts at the epoch after its last exp/latest.pth)
#   EPOCHS            19 epochs of floor(N_u / 4) steps: 5909 iterations at 3 patients (~6000, as cpu-small)
#   UNLABELED_LINES   keep only the first N unlabeled slices (0 = all): a short check of the shim
# Then: python benchmarks/peer_curves.py OUT/run.log RUN --iterations-per-epoch 311   (3 patients: 1244 // 4)
#
# The shim touches no line of the method. CPU: `.cuda()` removed, the process group on gloo, DDP without device
# ids, no `torch.cuda.set_device`, and BatchNorm left as it is: DDP refuses SyncBatchNorm on the CPU, and with
# one process (the logged runs used one GPU) SyncBatchNorm is BatchNorm. Selection: the
# script evaluates every epoch on val + test (`valtest.txt`); it reads `val.txt` here, as our protocol does,
# and the test split is never opened. torchvision: its `ColorJitter` on greyscale PIL images is replaced
# by the same operations with Pillow's ImageEnhance in a random order (brightness and contrast factors
# U(1 - s, 1 + s); saturation and hue leave an 'L' image unchanged), because PyPI's torchvision does not
# import beside the CPU build of torch 2.13. Shape: `configs/acdc.yaml` with crop_size 128 and batch 4.
set -eu
REPO=$1; DATA=$(cd "$2" && pwd); OUT=$3; LABELED=${4:-3}
COMMIT=0324f3dd4a22128105a5eb135d2586c0bb3cc647
. "$(dirname "$0")/peer_venv.sh"  # sets PV
if [ -f "$OUT/more-scenarios/medical/configs/acdc_cpu_small.yaml" ]; then
  RESUME=1; OUT=$(cd "$OUT" && pwd)
else
  RESUME=0; mkdir "$OUT"; OUT=$(cd "$OUT" && pwd)
fi
SPLIT=splits/acdc/$LABELED
UNLABELED=$SPLIT/unlabeled.txt
[ "${UNLABELED_LINES:-0}" != 0 ] && UNLABELED=unlabeled_short.txt
if [ $RESUME = 0 ]; then  # first start: the code, the shim and the config
git -C "$REPO" archive "$COMMIT" more-scenarios/medical 2>/dev/null | tar -x -C "$OUT"
cd "$OUT/more-scenarios/medical"
[ -f unimatch.py ] || { echo "no more-scenarios/medical/unimatch.py at $COMMIT in $REPO" >&2; exit 1; }
sed -i -e 's/\.cuda()//g' -e 's/device_ids=\[local_rank\], //' -e 's/output_device=local_rank, //' \
    -e 's/^\(\s*\)model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)$/\1pass/' unimatch.py
sed -i -e 's/backend="nccl"/backend="gloo"/' -e 's/^\(\s*\)torch.cuda.set_device(.*)$/\1pass/' util/dist_helper.py
sed -i "s#splits/%s/valtest.txt#splits/%s/val.txt#" dataset/acdc.py
mkdir -p torchvision
printf 'from . import transforms\n' > torchvision/__init__.py
cat > torchvision/transforms.py <<'PY'
import random

from PIL import ImageEnhance


class ColorJitter:
    """torchvision's ColorJitter on a greyscale PIL image: brightness and contrast in a random order."""

    def __init__(self, brightness, contrast, saturation, hue):
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, image):
        ops = [(ImageEnhance.Brightness, self.brightness), (ImageEnhance.Contrast, self.contrast)]
        random.shuffle(ops)
        for enhance, strength in ops:
            image = enhance(image).enhance(random.uniform(1 - strength, 1 + strength))
        return image
PY
[ "${UNLABELED_LINES:-0}" != 0 ] && head -n "$UNLABELED_LINES" "$SPLIT/unlabeled.txt" > unlabeled_short.txt
sed -e "s#^data_root:.*#data_root: $DATA#" -e 's/^crop_size:.*/crop_size: 128/' -e 's/^batch_size:.*/batch_size: 4/' \
    -e "s/^epochs:.*/epochs: ${EPOCHS:-19}/" configs/acdc.yaml > configs/acdc_cpu_small.yaml
else
  cd "$OUT/more-scenarios/medical"
fi
RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=localhost MASTER_PORT=${MASTER_PORT:-29571} OMP_NUM_THREADS=1 \
  "$PV/bin/python" unimatch.py --config configs/acdc_cpu_small.yaml --labeled-id-path "$SPLIT/labeled.txt" \
  --unlabeled-id-path "$UNLABELED" --save-path "$OUT/exp" >> "$OUT/run.log" 2>&1
echo "done: $OUT/run.log"
