"""Do the structures' size features add to the class confidence? Val dumps only (dump_val.py).

  python size_features.py DUMP_DIR...      # each DUMP_DIR: one run's val volumes, as dump_val.py writes them

Per run: Spearman of each feature with the true mean Dice and with the residual of a line on the class
confidence, then the leave-one-out MAE / Spearman / worst-10 of ridge fits (penalty 1, as
`mona.evaluation.quality`) on the class confidence alone and with the size features added.
"""
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def dice(a, b, classes):
    out = []
    for c in range(1, classes):
        p, t = a == c, b == c
        total = p.sum() + t.sum()
        out.append(1.0 if total == 0 else 2 * (p & t).sum() / total)
    return np.array(out)


def class_confidence(labels, probabilities, classes):
    top = probabilities.max(0).astype(np.float32)
    return np.mean([top[labels == c].mean() if (labels == c).any() else 0 for c in range(1, classes)])


def leave_one_out(rows, truth, columns, k=10):
    x = np.column_stack([[r[c] for r in rows] for c in columns])
    estimate = []
    for i in range(len(rows)):
        keep = np.arange(len(rows)) != i
        mean, scale = x[keep].mean(0), x[keep].std(0) + 1e-9
        z = (x[keep] - mean) / scale
        coef = np.linalg.solve(z.T @ z + np.eye(len(columns)), z.T @ (truth[keep] - truth[keep].mean()))
        estimate.append(truth[keep].mean() + ((x[i] - mean) / scale) @ coef)
    estimate = np.clip(estimate, 0, 1)
    worst = len(set(np.argsort(estimate)[:k]) & set(np.argsort(truth)[:k]))
    return f"MAE {np.abs(estimate - truth).mean():.3f}  Spearman {spearmanr(estimate, truth)[0]:.2f}  worst-10 {worst}"


for run in sys.argv[1:]:
    rows = []
    for path in sorted(Path(run).glob("*.npz")):
        z = np.load(path)
        labels, classes = z["labels"], z["base"].shape[0]
        rows.append({"dice": dice(labels, z["truth"], classes).mean(),
                     "confidence": class_confidence(labels, z["base"], classes),
                     "log_volume": np.log1p((labels > 0).sum()),
                     "slices": np.mean([(labels == c).any((1, 2)).sum() for c in range(1, classes)])})
    truth = np.array([r["dice"] for r in rows])
    confidence = np.array([r["confidence"] for r in rows])
    residual = truth - np.polyval(np.polyfit(confidence, truth, 1), confidence)
    print(f"{run}: {len(rows)} volumes")
    for name in ("log_volume", "slices"):
        feature = [r[name] for r in rows]
        print(f"  {name}: Spearman with Dice {spearmanr(feature, truth)[0]:.2f}, "
              f"with the residual of the confidence line {spearmanr(feature, residual)[0]:.2f}")
    for columns in (["confidence"], ["confidence", "log_volume"], ["confidence", "slices"],
                    ["confidence", "log_volume", "slices"]):
        print(f"  leave-one-out, {' + '.join(columns)}: {leave_one_out(rows, truth, columns)}")
