"""Our BCP student scored on val two ways: mona's (bilinear in and out) and BCP's val_2d (nearest zoom in and out).

  python docs/results/2026-12-07-peer-check/nearest_val.py runs/grid-cpu-small-6000/runs/bcp_l3_s0/selftrain [best|last]
"""

import sys

import numpy as np
import torch
from scipy.ndimage import zoom

from mona.data.ssl4mis import dataset_info, load_volumes
from mona.engine.run import load_run_model
from mona.evaluation.inference import dice_per_class, predict_volume

run = sys.argv[1]
model, state = load_run_model(run, sys.argv[2] if len(sys.argv) > 2 else "best")
model.eval()
info = dataset_info("../shared/data/ACDC", 4)
ours, theirs = [], []
for volume in load_volumes(info, "val"):
    probs = predict_volume(model, volume.image, 128, torch.device("cpu"), amp=False)
    ours.append(dice_per_class(probs.argmax(0).numpy(), volume.label, 4))
    prediction = np.zeros_like(volume.label)
    for k, image in enumerate(volume.image):
        x, y = image.shape
        small = zoom(image, (128 / x, 128 / y), order=0)
        with torch.no_grad():
            logits = model(torch.from_numpy(small)[None, None].float()).logits
        prediction[k] = zoom(logits.argmax(1)[0].numpy(), (x / 128, y / 128), order=0)
    theirs.append([2 * ((prediction == c) & (volume.label == c)).sum()
                   / ((prediction == c).sum() + (volume.label == c).sum()) if (prediction == c).any() else 0.0
                   for c in (1, 2, 3)])  # medpy's dc, 0 for an empty prediction, as val_2d scores
print(f"checkpoint at iteration {state['iteration']}: mona's val {100 * np.mean(ours):.1f}, "
      f"BCP's val_2d way {100 * np.mean(theirs):.1f}")
