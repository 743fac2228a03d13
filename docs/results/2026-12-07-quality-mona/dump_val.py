"""Dump per-val-volume probability maps (network, TTA mean, dropout mean, teacher) for quality-feature exploration.

  python dump_val.py RUN best|last DUMP_DIR      # val split only; one .npz per volume
"""
import sys
from pathlib import Path

import numpy as np
import torch

from mona.augment.weak import resize_images
from mona.config import config_from_dict
from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.checkpoint import load_checkpoint
from mona.evaluation.predict import load_predictor
from mona.evaluation.quality import VIEWS, _unview, _view, dropout_on, teacher_network

torch.set_grad_enabled(False)
run, ckpt, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
p = load_predictor(run, checkpoint=ckpt, unfinished=True)
state = load_checkpoint(p.checkpoint)
teacher = teacher_network(state, p.checkpoint, p.device)
info = dataset_info(config_from_dict(state["config"]).data.root, p.num_classes)
def probs_of(net, image, view=None, mc=False):
    s = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
    x = resize_images(s, (p.image_size, p.image_size))
    with dropout_on(net) if mc else torch.no_grad():
        lg = net(_view(x, *view) if view else x).logits.float()
    pr = torch.softmax(_unview(lg, *view) if view else lg, 1)
    return resize_images(pr, tuple(s.shape[-2:])).permute(1, 0, 2, 3)
for vol in load_volumes(info, "val"):
    found = p.predict_prepared(vol.image)
    tta = torch.stack([probs_of(p.model, vol.image, v) for v in VIEWS]).mean(0)
    torch.manual_seed(0)
    mc = torch.stack([probs_of(p.model, vol.image, mc=True) for _ in range(4)]).mean(0)
    arrays = dict(labels=found.labels, truth=vol.label, base=found.probabilities.half().numpy(),
                  tta=tta.half().numpy(), mc=mc.half().numpy())
    if teacher is not None:
        arrays["teacher"] = probs_of(teacher, vol.image).half().numpy()
    np.savez_compressed(out / f"{vol.name}.npz", **arrays)
    print(vol.name, flush=True)
