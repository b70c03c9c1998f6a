"""Datasets (registered in MMEngine's root ``DATASETS``).

:mod:`.digit_scenes`, the generator of the demo's digit scenes, registers nothing and is
not imported here (``import maskaq_plugin`` does not load pycocotools for it); import it
as ``from maskaq_plugin.datasets import digit_scenes``.
"""
from .maskaq_synthetic_dataset import MaskAQSyntheticDataset

__all__ = ['MaskAQSyntheticDataset']
