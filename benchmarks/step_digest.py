"""Three training steps of every stage of every method, their losses and a digest of the weights:
whether a refactor kept every method's numerics, bit for bit (same CPU, same torch).

  python benchmarks/step_digest.py --save before.pt        # on the commit before the change
  python benchmarks/step_digest.py --compare before.pt     # after it: "identical" or what differs

64 px random batches, eager, fp32, one SGD step after each; the digest is the float64 sum of every
parameter and buffer. The draws come from a seeded generator per step, as the engine's do, through
`Method.prepare`, so a draw moved, added or reordered shows as a difference.
"""

from __future__ import annotations

import argparse

import torch

from mona.config import load_config
from mona.methods import METHODS, method_stages


def digests() -> dict[str, tuple[list[dict[str, float]], float]]:
    out = {}
    for name in METHODS:
        for stage in method_stages(load_config([], [f"method={name}", "data.image_size=64"])):
            torch.manual_seed(0)
            method = stage.build(4)
            optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
            data = torch.Generator().manual_seed(0)
            rows = []
            for step in range(3):
                labeled = {"image": torch.rand(2, 1, 64, 64, generator=data),
                           "label": torch.randint(0, 4, (2, 64, 64), generator=data)}
                unlabeled = {"image": torch.rand(2, 1, 64, 64, generator=data)}
                run_step = getattr(method, "step", method.training_step)  # before Method.step: the step drew itself
                losses = run_step(labeled, unlabeled, step / 3, torch.Generator().manual_seed(100 + step))
                optimizer.zero_grad()
                losses["loss"].backward()
                optimizer.step()
                rows.append({key: value.item() for key, value in losses.items()})
            digest = sum(float(t.double().sum()) for t in method.state_dict().values() if t.is_floating_point())
            out[f"{name}/{stage.name}" if stage.name else name] = (rows, digest)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--save", help="write the digests here")
    what.add_argument("--compare", help="compare with digests saved by --save")
    args = parser.parse_args(argv)
    found = digests()
    if args.save:
        torch.save(found, args.save)
        print(f"{len(found)} stages -> {args.save}")
        return 0
    saved = torch.load(args.compare, weights_only=True)
    differ = 0
    for stage in sorted(saved.keys() | found.keys()):
        same = saved.get(stage) == found.get(stage)
        differ += not same
        print(f"{stage}: {'identical' if same else f'differs: {saved.get(stage)} -> {found.get(stage)}'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
