"""Statistics over seeds and paired per-volume comparisons of two methods."""

from __future__ import annotations

import numpy as np
from scipy.stats import ttest_1samp, wilcoxon

from mona.experiments.runs import volume_dice


def seed_stats(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def paired_comparison(runs: list[dict], variant: str, reference: str, labeled: str,
                      evaluation: str = "eval_test_best") -> dict | None:
    """`variant` against `reference` at one budget, volume by volume (best checkpoints, test split;
    `evaluation="eval_val_best"` pairs the val volumes instead).

    Each volume's Dice is averaged over classes and over the seeds both variants have run; the
    differences of the test volumes give the mean gain, the number of volumes where `variant`
    is ahead, and a two-sided Wilcoxon signed-rank p-value (None with fewer than two non-zero
    differences). That test sees volumes, not seeds, so `seed_gains` (each seed's mean gain over
    the volumes) shows the seed-to-seed spread it cannot, and `seed_p_value` tests them: a
    two-sided one-sample t-test of the seeds' gains against 0 (None with fewer than two seeds or
    identical gains). None when the two share no seed.
    """
    def by_seed(name: str) -> dict[int, dict[str, float]]:
        return {r["seed"]: volume_dice(r, evaluation) for r in runs if r["variant"] == name and r["labeled"] == labeled}

    ours, theirs = by_seed(variant), by_seed(reference)
    seeds = sorted(ours.keys() & theirs.keys())
    if not seeds:
        return None
    cases = sorted(set.intersection(*(set(ours[s]) & set(theirs[s]) for s in seeds)))
    per_seed = np.array([[ours[s][c] - theirs[s][c] for c in cases] for s in seeds])
    gains = per_seed.mean(axis=0)
    p_value = float(wilcoxon(gains).pvalue) if np.count_nonzero(gains) >= 2 else None
    seed_gains = per_seed.mean(axis=1)
    seed_p_value = float(ttest_1samp(seed_gains, 0.0).pvalue) if len(seeds) >= 2 and np.ptp(seed_gains) > 0 else None
    return {"seeds": seeds, "volumes": len(cases), "gain": float(gains.mean()), "ahead": int((gains > 0).sum()),
            "p_value": p_value, "seed_gains": [float(g) for g in seed_gains], "seed_p_value": seed_p_value}
