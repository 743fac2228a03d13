"""mona: label-efficient medical image segmentation (MONA and semi-supervised baselines).

The Python API, beside the `mona` command (the same code paths):

    import mona
    config = mona.load_config(["cpu-small"], ["data.root=prepared", "method=mean_teacher", "out=runs/mt"])
    mona.train(config)                                  # mona train ...
    mona.evaluate_run("runs/mt", "test")                # mona evaluate runs/mt
    predictor = mona.load_predictor("runs/mt")          # best checkpoint on val
    mask = predictor.segment_file("scan.nii.gz")        # mona predict, as an array aligned with the scan
    mask = predictor.segment(volume, spacing=(1.5, 1.5, 5.0))   # a numpy volume (x, y, z)
    quality = mona.load_quality_estimator(predictor, "runs/mt")  # mona predict --quality: fitted on val
    row = quality.assess(predictor.segmentation(volume, spacing=(1.5, 1.5, 5.0)), "case").row  # expected Dice
    mona.suggest("runs/mt", "next/", 4)                  # mona suggest runs/mt -o next --n 4

Names are imported on first use, so `import mona` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "mona.config",
    "train": "mona.engine.run",
    "resume_config": "mona.engine.run",
    "evaluate_run": "mona.engine.run",
    "load_predictor": "mona.evaluation.predict",
    "Predictor": "mona.evaluation.predict",
    "load_quality_estimator": "mona.evaluation.quality",
    "suggest": "mona.evaluation.suggest",
    "MonaError": "mona.errors",
    "METHODS": "mona.methods",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mona' has no attribute {name!r}")
