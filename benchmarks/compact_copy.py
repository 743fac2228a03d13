"""Make a small transfer copy of an SSL4MIS-layout dataset (for a remote GPU machine with a size limit).

  python benchmarks/compact_copy.py ../shared/data/ACDC .dev/acdc8 --slice-size 128

Images in [0, 1] are quantised to 256 grey levels and stored as uint8 (the loader reads a
uint8 image as value / 255), gzip level 9; labels are copied exactly. With `--slice-size`
the training slices are stored already resized the way the loader resizes them for that
training size (the val/test volumes keep their resolution, since scoring happens there), so
a copy made for 128 serves only 128x128 training. ACDC at 128: about 130 MB -> 30 MB.
Results on such a copy say so: 8-bit quantisation is a (small) change of the input.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import h5py
import numpy as np
import torch

from mona.augment.weak import resize_images, resize_labels


def compact(source: Path, target: Path, size: int | None) -> None:
    with h5py.File(source, "r") as handle:
        image, label = handle["image"][()].astype(np.float32), handle["label"][()]
    if size is not None:
        image = resize_images(torch.from_numpy(image)[None, None], (size, size))[0, 0].numpy()
        label = resize_labels(torch.from_numpy(label)[None], (size, size))[0].numpy()
    quantised = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(target, "w") as handle:
        for key, value in (("image", quantised), ("label", label.astype(np.uint8))):
            handle.create_dataset(key, data=value, compression="gzip", compression_opts=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--slice-size", type=int, help="store training slices resized to this training size")
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.source.glob("*.list")) + sorted(args.source.glob("*.json")):
        shutil.copyfile(path, args.target / path.name)
    files = sorted((args.source / "data").rglob("*.h5"))
    for path in files:
        size = args.slice_size if path.parent.name == "slices" else None
        compact(path, args.target / path.relative_to(args.source), size)
    print(f"{len(files)} files -> {args.target}")


if __name__ == "__main__":
    main()
