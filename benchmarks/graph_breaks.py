"""How many graphs `torch.compile` makes of each method's training step, and why it breaks (issue #48).

  python benchmarks/graph_breaks.py            # every stage of every method, 64 px, CPU
  python benchmarks/graph_breaks.py --methods mean_teacher,mona

One step of each stage is traced by `torch._dynamo.explain` (no kernels compiled), its draws and
ramp weights prepared on the host first as the engine does (`Method.prepare`). A step in one graph
is what a captured CUDA graph (`torch.compile(mode="reduce-overhead")`) can replay whole; each break
is listed with the line it happens at and dynamo's reason, most frequent first (each distinct
place once, as `explain` reports it).
"""

from __future__ import annotations

import argparse
import collections
import logging
import warnings

import torch
import torch._dynamo

from mona.config import load_config
from mona.methods import METHODS, method_stages


def explain_stage(stage, size: int):
    torch.manual_seed(0)
    method = stage.build(4)
    g = torch.Generator().manual_seed(0)
    labeled = {"image": torch.rand(stage.batch_labeled, 1, size, size, generator=g),
               "label": torch.randint(0, 4, (stage.batch_labeled, size, size), generator=g)}
    unlabeled = ({"image": torch.rand(stage.batch_unlabeled, 1, size, size, generator=g)}
                 if method.uses_unlabeled else None)
    prepared = method.prepare(labeled, unlabeled, 0.5, torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    return torch._dynamo.explain(method.training_step)(labeled, unlabeled, 0.5, prepared)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    for name in args.methods.split(","):
        config = load_config([], [f"method={name}", f"data.image_size={args.size}", "data.batch_labeled=2",
                                  "data.batch_unlabeled=2"])
        for stage in method_stages(config):
            explained = explain_stage(stage, args.size)
            print(f"{name}{'/' + stage.name if stage.name else ''}: {explained.graph_count} graph(s), "
                  f"{explained.graph_break_count} break(s)")
            reasons = collections.Counter()
            for found in explained.break_reasons:
                where = found.user_stack[-1] if found.user_stack else None
                file = where.filename.split("site-packages/")[-1].split("src/")[-1] if where else "?"
                place = f"{file}:{where.lineno}" if where else "?"
                reasons[(place, str(found.reason).splitlines()[0][:90])] += 1
            for (place, reason), count in reasons.most_common():
                print(f"    {count} x {place}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
