"""Datasets (registered in MMEngine's root ``DATASETS``)."""
from .maskaq_synthetic_dataset import MaskAQSyntheticDataset

__all__ = ['MaskAQSyntheticDataset']
