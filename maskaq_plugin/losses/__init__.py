"""MaskAQ losses: a functional core and one registered ``nn.Module`` per loss.

Importing this package registers every loss class in MMEngine's root ``MODELS``
registry. The pure functions live in :mod:`maskaq_plugin.losses.functional`.
"""
from . import defaults, functional
from .detection_kd_loss import DetectionKDLoss
from .feature_mse_loss import FeatureMSELoss
from .inter_head_ssim_loss import InterHeadSSIMLoss
from .kd_loss import KDLoss
from .masked_attention_difference_loss import MaskedAttentionDifferenceLoss
from .masked_attention_ssim_loss import MaskedAttentionSSIMLoss
from .patch_entropy_loss import PatchEntropyLoss
from .pixel_kl_loss import PixelKLLoss
from .total_variation_loss import TotalVariationLoss

__all__ = [
    'defaults', 'functional', 'InterHeadSSIMLoss', 'PatchEntropyLoss',
    'MaskedAttentionDifferenceLoss',
    'MaskedAttentionSSIMLoss', 'TotalVariationLoss', 'KDLoss', 'FeatureMSELoss',
    'PixelKLLoss', 'DetectionKDLoss'
]
