"""mona: label-efficient medical image segmentation (MONA and semi-supervised baselines)."""

__version__ = "0.1.0"
