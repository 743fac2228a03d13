"""How far L_eqv's thin-plate spline moves pixels, with the kernel centres mona passes and with kornia's.

  python benchmarks/tps_centres.py [--jitter 0.01] [--draws 3]

The spline of `random_equivariance_warp` (5x5 control points, each moved by U(-2 jitter, 2 jitter) in
[-1, 1] coordinates, i.e. jitter of the image size) is fitted by `get_tps_transform(dst, src)`. Evaluated
with the kernels centred on `dst` (kornia#6404: where that function puts them) it maps each `dst` onto its
`src` and moves pixels by about the jitter; evaluated on `src`, as mona does (docs/method.md, known defect),
it does neither. Printed per draw: the largest displacement on a 33x33 grid both ways, and how far each
leaves the control points from where they should go.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from kornia.geometry.transform import get_tps_transform, warp_points_tps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jitter", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    torch.manual_seed(0)
    side = torch.linspace(-1, 1, 5)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    src = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2)
    line = torch.linspace(-1, 1, 33)
    gy, gx = torch.meshgrid(line, line, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)
    print("draw  largest displacement (centres dst | src)  control-point error (dst | src)")
    for draw in range(args.draws):
        dst = src + torch.empty_like(src).uniform_(-2 * args.jitter, 2 * args.jitter)
        kernel, affine = get_tps_transform(dst, src)
        moved = {name: warp_points_tps(grid, centres, kernel, affine) - grid
                 for name, centres in (("dst", dst), ("src", src))}
        error = {name: float((warp_points_tps(dst, centres, kernel, affine) - src).abs().max())
                 for name, centres in (("dst", dst), ("src", src))}
        print(f"{draw:>4}  {float(moved['dst'].abs().max()):.4f} | {float(moved['src'].abs().max()):.4f}"
              f"  {error['dst']:.2e} | {error['src']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
