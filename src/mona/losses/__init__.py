"""MONA's losses, one documented module each (MONA_SPEC sections 3 and 4)."""

from mona.losses.contrast import AnatomicalContrastLoss
from mona.losses.distillation import SimilarityDistillationLoss, extract_patches
from mona.losses.equivariance import EquivarianceLoss
from mona.losses.nearest_neighbour import NearestNeighbourLoss
from mona.losses.queue import ClassMemoryBank, FeatureQueue
from mona.losses.supervised import SupervisedSegLoss

__all__ = [
    "AnatomicalContrastLoss",
    "ClassMemoryBank",
    "EquivarianceLoss",
    "FeatureQueue",
    "NearestNeighbourLoss",
    "SimilarityDistillationLoss",
    "SupervisedSegLoss",
    "extract_patches",
]
