"""Task priors (``L_sem`` of Stage 1): one class per task."""
from .base import TaskPrior
from .classification import ClassificationPrior
from .detection import DetectionPrior
from .segmentation import SegmentationPrior

__all__ = ['TaskPrior', 'ClassificationPrior', 'DetectionPrior', 'SegmentationPrior']
