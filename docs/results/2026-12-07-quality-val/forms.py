"""Nested leave-one-out on the val rows cached in RUN/quality_model.json, for subsets of quality.FORMS (val only).

  python docs/results/2026-12-07-quality-val/forms.py RUN [RUN ...]   (after quality_check.py RUN --split val --refit)
"""
import sys, json, numpy as np
from mona.evaluation import quality as q
from scipy.stats import spearmanr
subsets = {
 "all": list(q.FORMS),
 "expected only": ["expected Dice"],
 "no-fit + lines": ["expected Dice", "line on expected Dice", "line on class confidence", "expected Dice + class confidence"],
 "old (before)": ["raw agreement", "scaled agreement", "line on agreement", "line on confidence", "agreement + plausibility", "perturbations", "perturbations + plausibility", "all parts"],
 "expected + ecc + all": ["expected Dice", "expected Dice + class confidence", "all parts"],
 "old + expected": ["expected Dice", "raw agreement", "scaled agreement", "line on expected Dice", "line on agreement", "line on confidence", "agreement + plausibility", "perturbations", "perturbations + plausibility", "all parts"],
 "old + expected no line": ["expected Dice", "raw agreement", "scaled agreement", "line on agreement", "line on confidence", "agreement + plausibility", "perturbations", "perturbations + plausibility", "all parts"],
}
full = dict(q.FORMS)
for run in sys.argv[1:]:
    val = json.load(open(f"{run}/quality_model.json"))["val"]
    rows = [{k: v for k, v in r.items() if k in q.PARTS} for r in val]; dice = [r["dice"] for r in val]
    print(run, "n", len(rows), "mean dice %.3f" % np.mean(dice))
    for name, forms in subsets.items():
        q.FORMS = {k: full[k] for k in forms}
        est = [q.QualityModel.fit(rows[:i]+rows[i+1:], dice[:i]+dice[i+1:]).predict(rows[i]) for i in range(len(rows))]
        est = np.array(est); d = np.array(dice)
        worst = len(set(np.argsort(est)[:10]) & set(np.argsort(d)[:10]))
        print(f"  {name:24s} nested MAE {np.abs(est-d).mean():.3f}  Spearman {spearmanr(est,d).statistic:+.3f} worst10 {worst}")
    q.FORMS = full
