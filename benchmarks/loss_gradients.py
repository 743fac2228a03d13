"""How hard each MONA loss pulls on the UNet, next to the supervised loss.

    python benchmarks/loss_gradients.py DATA [--labeled 7] [--size 128] [--warmup 100] [--seeds 1,2]

For MONA stage 1 (global and local distillation) and stage 2 (L_unsup, L_contrast, L_eqv,
L_nn), prints the norm of each loss's gradient on the UNet's parameters (at the spec's
weights: 1 for every loss but 0.01 for L_contrast, no ramp), its ratio to
the supervised gradient's norm and the cosine between the two. Measured on a fresh model and
again after `--warmup` steps of supervised-only training. A component's gradient is the
gradient of L_sup + that component minus the gradient of L_sup alone, on the same batch and
random draws (every draw that L_sup depends on comes before the component's own draws).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from mona.config import MonaConfig
from mona.data.ssl4mis import dataset_info, load_train_data, sample_indices
from mona.engine.schedule import ema_update
from mona.methods.mona import MonaFinetune, MonaPretrain

STAGE1_PARTS = {"global": {"global_weight": 1.0}, "local": {"local_weight": 1.0}}
STAGE1_OFF = {"global_weight": 0.0, "local_weight": 0.0}
STAGE2_PARTS = {"unsup": {"unsup_weight": 1.0}, "contrast": {"tailness": True},
                "eqv": {"consistency": True}, "nn": {"diversity": True}}
STAGE2_OFF = {"unsup_weight": 0.0, "tailness": False, "consistency": False, "diversity": False}


def batches(data, seed: int, size: int = 4):
    generator = torch.Generator().manual_seed(seed)
    labeled = data.labeled.batch(sample_indices(len(data.labeled.names), size, generator), torch.device("cpu"))
    unlabeled = data.unlabeled.batch(sample_indices(len(data.unlabeled.names), size, generator),
                                     torch.device("cpu"), with_label=False)
    return labeled, unlabeled


def unet_gradient(method, config: MonaConfig, data, seed: int) -> torch.Tensor:
    method.config = config
    method.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses = method.step(*batches(data, seed), 0.1, torch.Generator().manual_seed(seed))
    losses["loss"].backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in method.model.parameters()])


def report(stage: str, steps: int, method, base: MonaConfig, parts: dict, data, seeds) -> None:
    for seed in seeds:
        supervised = unet_gradient(method, base, data, seed)
        print(f"{stage:8} {steps:6d} {seed:5d} {'sup':9} {supervised.norm():9.3f} {1.0:8.2f} {1.0:8.3f}")
        for name, switches in parts.items():
            extra = unet_gradient(method, dataclasses.replace(base, **switches), data, seed) - supervised
            cosine = torch.nn.functional.cosine_similarity(extra, supervised, dim=0)
            print(f"{stage:8} {steps:6d} {seed:5d} {name:9} {extra.norm():9.3f} "
                  f"{extra.norm() / supervised.norm():8.2f} {cosine:8.3f}", flush=True)


def warm_up(method, base: MonaConfig, data, steps: int) -> None:
    """Supervised-only SGD steps (lr 0.01, momentum 0.9) with the EMA teacher following."""
    method.config = base
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for step in range(steps):
        losses = method.step(*batches(data, 1000 + step), 0.1, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        for teacher, student in method.ema_pairs():
            ema_update(teacher, student, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--labeled", default="7")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--representation-stride", type=int, default=4)
    args = parser.parse_args()
    info = dataset_info(args.data)
    data = load_train_data(info, args.labeled, args.size)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'stage':8} {'steps':>6} {'seed':>5} {'loss':9} {'|grad|':>9} {'x sup':>8} {'cos sup':>8}")
    for stage, method_class, off, parts in (("stage1", MonaPretrain, STAGE1_OFF, STAGE1_PARTS),
                                            ("stage2", MonaFinetune, STAGE2_OFF, STAGE2_PARTS)):
        torch.manual_seed(0)
        base = dataclasses.replace(MonaConfig(representation_stride=args.representation_stride), **off)
        sized = {"image_size": args.size} if method_class is MonaPretrain else {}  # the local queue's length
        method = method_class(info.num_classes, base, **sized).train()
        report(stage, 0, method, base, parts, data, seeds)
        if args.warmup:
            warm_up(method, base, data, args.warmup)
            report(stage, args.warmup, method, base, parts, data, seeds)


if __name__ == "__main__":
    main()
