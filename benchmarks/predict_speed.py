"""Speed of `mona predict` with a randomly initialised UNet (no training needed).

CPU: seconds per 10-slice 256x256 NIfTI volume, end to end (read, normalise, predict, write),
in fp32 and, where mona uses it (`fast_bf16`: CPUs with AMX, AMD CPUs with AVX512-BF16), with bf16
autocast. GPU (when there is one): network slices per second, fp32 and
bf16, over a 256-slice volume.

  python benchmarks/predict_speed.py [--only cpu|gpu] [--repeats 5] [--gpu-slices 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mona.config import load_config
from mona.engine.checkpoint import save_checkpoint
from mona.engine.trainer import fast_bf16
from mona.evaluation.predict import load_predictor, predict_file
from mona.models.unet import UNet

SHAPE = (256, 256, 10)  # NIfTI (x, y, z): 10 slices of 256 x 256
NUM_CLASSES = 4


def write_run(folder: Path) -> Path:
    """A run folder whose best.pt holds a random UNet at image size 256 and min-max preprocessing."""
    torch.manual_seed(0)
    weights = {f"model.{key}": value for key, value in UNet(1, NUM_CLASSES).state_dict().items()}
    save_checkpoint(folder / "best.pt", {
        "method": weights, "num_classes": NUM_CLASSES, "image_size": SHAPE[0], "iteration": 0,
        "class_names": ["background", "RV", "Myo", "LV"], "config": load_config().to_dict(),
        "preprocessing": {"normalisation": "minmax"},
    })
    return folder


def seconds_per_volume(run: Path, scan: Path, out: Path, amp: bool, repeats: int) -> float:
    predictor = load_predictor(run, device="cpu", amp=amp)
    if repeats > 1:
        predict_file(predictor, scan, out)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        predict_file(predictor, scan, out)
    return (time.perf_counter() - start) / repeats


def gpu_slices_per_second(run: Path, slices: int, batch_size: int, amp: bool, repeats: int) -> float:
    predictor = load_predictor(run, device="cuda", amp=amp, batch_size=batch_size)
    volume = np.random.default_rng(0).random((slices, SHAPE[1], SHAPE[0]), dtype=np.float32)
    predictor.probabilities(volume)  # warm-up (cuDNN autotuning, allocations)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.probabilities(volume)
    torch.cuda.synchronize()
    return slices * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("cpu", "gpu"), help="time one device only")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gpu-slices", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, scan = write_run(Path(tmp) / "run"), Path(tmp) / "scan.nii.gz"
        rng = np.random.default_rng(0)
        nib.save(nib.Nifti1Image(rng.integers(0, 1000, SHAPE).astype(np.int16), np.diag([1.4, 1.4, 8.0, 1.0])), scan)
        native = fast_bf16(torch.device("cpu"))
        if args.only != "gpu":
            print(f"CPU, {torch.get_num_threads()} threads, volume {SHAPE[2]} x {SHAPE[1]} x {SHAPE[0]}:")
            print(f"  fp32: {seconds_per_volume(run, scan, Path(tmp) / 'out', False, args.repeats):.3f} s per volume")
            if native:
                print(f"  bf16 autocast: {seconds_per_volume(run, scan, Path(tmp) / 'out', True, args.repeats):.3f} s "
                      "per volume")
            else:
                print("  bf16 autocast: not used on this CPU (fast_bf16), --amp predicts in fp32")
        if args.only != "cpu" and torch.cuda.is_available():
            print(f"{torch.cuda.get_device_name()}, {args.gpu_slices} slices of 256 x 256, "
                  f"batch {args.batch_size}:")
            for amp, label in ((False, "fp32"), (True, "bf16 autocast")):
                rate = gpu_slices_per_second(run, args.gpu_slices, args.batch_size, amp, args.repeats)
                print(f"  {label}: {rate:.0f} slices per second")


if __name__ == "__main__":
    main()
