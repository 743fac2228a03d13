"""How equivariant is a trained network under L_eqv's warp? A check that the warp is aligned.

    python benchmarks/equivariance_check.py RUN [--checkpoint best] [--split val] [--volumes 4] [--every 3]

For slices of the split's first volumes (resized to the run's size), compares W(softmax(f(x)))
with softmax(f(W(x))) in eval mode on the pixels L_eqv uses (predicted foreground, confidence
>= 0.7, inside the image), for four families of W: identity, mirror only, rotation only
(up to 60 degrees) and the spec's full random similarity + TPS warp. Prints the mean KL and
the argmax agreement. The identity row must read KL 0 and agreement 1; if the warp moved
probabilities and images differently, even a well-trained network would disagree with itself
under every warp, rotation included.
"""

from __future__ import annotations

import argparse

import torch

from mona.augment.warp import random_equivariance_warp
from mona.augment.weak import resize_images
from mona.config import config_from_dict
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.run import load_run_model
from mona.losses import EquivarianceLoss

WARPS = {
    "identity": dict(rotation=0.0, scale=(1.0, 1.0), translation=0.0, mirror_p=0.0, jitter=0.0),
    "mirror only": dict(rotation=0.0, scale=(1.0, 1.0), translation=0.0, mirror_p=1.0, jitter=0.0),
    "rotation only": dict(scale=(1.0, 1.0), translation=0.0, mirror_p=0.0, jitter=0.0),
    "spec warp": {},
}


def slices(run: str, checkpoint: str, split: str, volumes: int, every: int) -> tuple[torch.nn.Module, torch.Tensor]:
    model, state = load_run_model(run, checkpoint)
    info = dataset_info(config_from_dict(state["config"]).data.root, state["num_classes"])
    size = (state["image_size"], state["image_size"])
    images = [torch.from_numpy(volume.image[z])[None, None]
              for volume in load_volumes(info, split)[:volumes] for z in range(0, volume.image.shape[0], every)]
    return model.eval(), torch.cat([resize_images(image, size) for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--split", default="val")
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--every", type=int, default=3, help="take every n-th slice of each volume")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, images = slices(args.run, args.checkpoint, args.split, args.volumes, args.every)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{args.run} ({args.checkpoint}), {images.shape[0]} {args.split} slices")
    with torch.no_grad():
        probs = torch.softmax(model(images).logits.float(), dim=1)
        confidence, label = probs.max(dim=1)
        for name, options in WARPS.items():
            warp = random_equivariance_warp(generator, images.shape[0], images.shape[-2:], "cpu", **options)
            target = warp(probs)
            prediction = model(warp(images)).logits.float()
            mask = (warp(label) != 0) & (warp(confidence) >= 0.7) & warp.inside
            kl = EquivarianceLoss()(target, prediction, mask)
            agreement = (target.argmax(1) == prediction.argmax(1))[mask].float().mean()
            print(f"{name:14s} pixels {mask.float().mean():.3f}  KL {kl:.3f}  argmax agreement {agreement:.3f}")


if __name__ == "__main__":
    main()
