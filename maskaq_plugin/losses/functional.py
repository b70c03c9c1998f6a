"""Functional core of the MaskAQ losses: pure functions on plain tensors.

Attention inputs are lists over the layers of one group of equally shaped layers (a
single tensor is one layer): scores ``(B, H, N, Nk)`` = raw ``Q·Kᵀ``, context
``(B, H, N, d)`` = ``A·V`` per head; window attention passes ``B·nW`` as ``B``. Each
docstring states which axis (queries ``N`` or keys ``Nk``) the loss reduces over, so
spatial-reduction attention (``Nk < N``) is well defined.

Stage 1 (synthesis): :func:`inter_head_ssim_loss` (L_head), :func:`total_variation`
(L_tv), :func:`patch_similarity_entropy` (L_ent), :func:`informative_region_mask` and
:func:`masked_attention_difference` (L_mad). Stage 2 (QAT): :func:`masked_attention_ssim`
(L_mssim), :func:`kd_kl_loss`, and for dense tasks :func:`feature_mse_loss` and
:func:`pixel_kl_loss`.
"""
# The implementation lives in the private package ``_functional`` (one file per family of
# losses, to keep files short); this module is the public, stable import path.
from ._functional.attention_prior import inter_head_ssim_loss, patch_similarity_entropy
from ._functional.distillation import (feature_mse_loss, kd_kl_loss, masked_attention_ssim,
                                       pixel_kl_loss)
from ._functional.image_prior import total_variation
from ._functional.informative_region import (MASK_MODES, check_mask_mode,
                                             informative_region_mask,
                                             masked_attention_difference)

__all__ = [
    'inter_head_ssim_loss', 'patch_similarity_entropy', 'informative_region_mask',
    'masked_attention_difference', 'masked_attention_ssim', 'total_variation',
    'kd_kl_loss', 'feature_mse_loss', 'pixel_kl_loss', 'MASK_MODES', 'check_mask_mode'
]
