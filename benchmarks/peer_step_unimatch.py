"""One UniMatch step of mona against the official step, on the same network, batch and random draws.

  python benchmarks/peer_step_unimatch.py MEDICAL_DIR [--threshold T]

MEDICAL_DIR is UniMatch's `more-scenarios/medical` folder (e.g. OUT/more-scenarios/medical after
`benchmarks/peer_unimatch.sh ... OUT`). Both steps run on one copy each of the official UNet (mona's
method reads it through mona's UNet interface), dropout off (the random masks cannot be shared),
identity weak augmentation, and the strong views and CutMix boxes that mona draws, which the official
lines (unimatch.py L129-L175, its DiceLoss) then take as their own. Prints both steps' loss parts and
the largest difference between the two gradients. With random weights no pixel passes UniMatch's
0.95 confidence, so the unlabeled terms are 0; `--threshold 0.3` makes them count.
"""

from __future__ import annotations

import argparse
import copy
import sys
from types import SimpleNamespace

import torch
from torch import nn

from mona.augment.boxes import random_boxes
from mona.config import load_config
from mona.methods.unimatch import UniMatch, apply_unimatch_strong, draw_unimatch_strong, quantise
from mona.models.unet import UNet


class MonaInterface(nn.Module):
    """The official UNet behind mona's UNet interface (`encode`, `decode(...).logits`, feature perturbation)."""

    forward_feature_perturbation = UNet.forward_feature_perturbation

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def encode(self, x):
        return self.net.encoder(x)

    def decode(self, features):
        return SimpleNamespace(logits=self.net.decoder(features))

    def forward(self, x):
        return self.decode(self.encode(x))


def official_step(model, dice_loss, img_x, mask_x, img_u_w, img_u_w_mix, strong, boxes, threshold):
    """UniMatch's step lines L129-L175 on given views (`strong`: s1, s2, s1_mix, s2_mix before CutMix)."""
    img_u_s1, img_u_s2, img_u_s1_mix, img_u_s2_mix = [s.clone() for s in strong]
    cutmix_box1, cutmix_box2 = [box.long() for box in boxes]
    with torch.no_grad():
        model.eval()
        pred_u_w_mix = model(img_u_w_mix).detach()
        conf_u_w_mix, mask_u_w_mix = pred_u_w_mix.softmax(dim=1).max(dim=1)[0], pred_u_w_mix.argmax(dim=1)
    img_u_s1[cutmix_box1.unsqueeze(1).expand(img_u_s1.shape) == 1] = \
        img_u_s1_mix[cutmix_box1.unsqueeze(1).expand(img_u_s1.shape) == 1]
    img_u_s2[cutmix_box2.unsqueeze(1).expand(img_u_s2.shape) == 1] = \
        img_u_s2_mix[cutmix_box2.unsqueeze(1).expand(img_u_s2.shape) == 1]
    model.train()
    num_lb, num_ulb = img_x.shape[0], img_u_w.shape[0]
    preds, preds_fp = model(torch.cat((img_x, img_u_w)), True)
    pred_x, pred_u_w = preds.split([num_lb, num_ulb])
    pred_u_w_fp = preds_fp[num_lb:]
    pred_u_s1, pred_u_s2 = model(torch.cat((img_u_s1, img_u_s2))).chunk(2)
    pred_u_w = pred_u_w.detach()
    conf_u_w, mask_u_w = pred_u_w.softmax(dim=1).max(dim=1)[0], pred_u_w.argmax(dim=1)
    mask_1, conf_1 = mask_u_w.clone(), conf_u_w.clone()
    mask_2, conf_2 = mask_u_w.clone(), conf_u_w.clone()
    mask_1[cutmix_box1 == 1], conf_1[cutmix_box1 == 1] = mask_u_w_mix[cutmix_box1 == 1], conf_u_w_mix[cutmix_box1 == 1]
    mask_2[cutmix_box2 == 1], conf_2[cutmix_box2 == 1] = mask_u_w_mix[cutmix_box2 == 1], conf_u_w_mix[cutmix_box2 == 1]
    loss_x = (nn.CrossEntropyLoss()(pred_x, mask_x)
              + dice_loss(pred_x.softmax(dim=1), mask_x.unsqueeze(1).float())) / 2.0
    loss_s1 = dice_loss(pred_u_s1.softmax(dim=1), mask_1.unsqueeze(1).float(), ignore=(conf_1 < threshold).float())
    loss_s2 = dice_loss(pred_u_s2.softmax(dim=1), mask_2.unsqueeze(1).float(), ignore=(conf_2 < threshold).float())
    loss_fp = dice_loss(pred_u_w_fp.softmax(dim=1), mask_u_w.unsqueeze(1).float(),
                        ignore=(conf_u_w < threshold).float())
    loss = (loss_x + loss_s1 * 0.25 + loss_s2 * 0.25 + loss_fp * 0.5) / 2.0
    return {"loss": loss, "sup": loss_x, "strong": (loss_s1 + loss_s2) / 2, "fp": loss_fp,
            "confident": (conf_u_w >= threshold).float().mean()}


class OfficialForward(nn.Module):
    """The official UNet's `forward(x, need_fp)` with the perturbation's Dropout2d at p 0."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, need_fp=False):
        features = self.net.encoder(x)
        if need_fp:
            return self.net.decoder([torch.cat((f, nn.Dropout2d(0.0)(f))) for f in features]).chunk(2)
        return self.net.decoder(features)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("medical_dir")
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args()
    sys.path.insert(0, args.medical_dir)
    from model.unet import UNet as OfficialUNet
    from util.utils import DiceLoss

    torch.manual_seed(0)
    batch, size = 4, 64
    images_l = torch.rand(batch, 1, size, size)
    labels_l = (images_l[:, 0] * 4).long().clamp(max=3)
    images_u = torch.rand(2 * batch, 1, size, size)  # the unlabeled batch, then the mix batch
    official = OfficialUNet(1, 4)
    for module in official.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = load_config(["cpu-small"], ["method=unimatch", "unimatch.feature_dropout=0.0",
                                         f"unimatch.confidence_threshold={args.threshold}"]).unimatch
    method = UniMatch(4, config)
    method.model = MonaInterface(copy.deepcopy(official))
    generator = torch.Generator().manual_seed(1)
    prepared = {"weak": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(3 * batch, 1, 1),
                "strong": draw_unimatch_strong(generator, 4 * batch, "cpu"),
                "boxes": [random_boxes(batch, (size, size), generator, p=1.0) for _ in range(2)]}
    method.train()
    ours = method.training_step({"image": images_l, "label": labels_l}, {"image": images_u}, 0.0, prepared)
    ours["loss"].backward()

    weak_u, weak_mix = quantise(images_u).chunk(2)
    strong = apply_unimatch_strong(torch.cat([weak_u, weak_u, weak_mix, weak_mix]), prepared["strong"]).chunk(4)
    theirs = official_step(OfficialForward(official), DiceLoss(n_classes=4), images_l, labels_l, weak_u, weak_mix,
                           strong, prepared["boxes"], args.threshold)
    theirs["loss"].backward()
    for name, losses in (("mona", ours), ("official", theirs)):
        print(f"{name:>8}: " + ", ".join(f"{key} {float(value.detach()):.6f}" for key, value in losses.items()))
    pairs = list(zip(method.model.net.parameters(), official.parameters()))
    difference = max(float((a.grad - b.grad).abs().max()) for a, b in pairs)
    largest = max(float(b.grad.abs().max()) for _, b in pairs)
    print(f"gradients: largest difference {difference:.3g}, largest entry {largest:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
