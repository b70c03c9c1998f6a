"""Distillation losses of the QAT stage: ``L_mssim``, logit KD and dense-task KD.

The full-precision model F is the teacher: its tensors are treated as targets and
detached, so gradients reach only the quantized student Q.

References:
    MaskAQ: Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked
    Attention Alignment for Data-Free Quantization of Vision Transformers", ICML 2026.
    MimiQ: Choi et al., "MimiQ: Low-Bit Data-Free Quantization of Vision Transformers
    with Encouraging Inter-Head Attention Similarity" (unmasked attention-output SSIM).
    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015 (logit KD).
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..defaults import DENSE_KD_TEMPERATURE, KD_TEMPERATURE, TOP_RATIO, W_HIGH, W_LOW
from ._utils import check_same_shape, stack_layers
from .informative_region import check_mask_mode

SSIM_C2 = 0.03**2


def masked_attention_ssim(context_fp: Tensor | Sequence[Tensor],
                          context_q: Tensor | Sequence[Tensor], *, has_cls_token: bool,
                          top_ratio: float = TOP_RATIO, w_high: float = W_HIGH,
                          w_low: float = W_LOW, mask_mode: str = 'informative',
                          generator: torch.Generator | None = None) -> Tensor:
    """Masked attention-output SSIM, ``L_mssim`` (MaskAQ).

    Per layer and image, the importance of patch token ``n`` is ``mean_{heads, d}
    |O^F[n]|``; the ``k = max(1, round(top_ratio·N))`` most important tokens get weight
    ``w_high``, the others ``w_low`` (rounding as in the authors' code), and the weights
    are normalised to sum to 1 over tokens. For each (layer, image, head, channel of d)
    the weighted means, population variances and covariance of ``O^F`` and ``O^Q``
    across tokens give::

        ssim = (2·σ_FQ + C2) / (σ_F² + σ_Q² + C2),  C2 = 0.03²,   L = 1 - mean(ssim)

    Axes: statistics run over **query tokens** (``N``, class token dropped when
    present), so the key count of spatial-reduction attention does not enter.
    ``w_high = w_low`` gives MimiQ's unmasked loss. ``mask_mode='random'`` is the
    ablation *(ours)*: the same ``k`` tokens per (layer, image) get ``w_high``, but drawn
    uniformly without replacement, independent of ``O^F``. Differences from the authors' code:
    they add 1e-6 to every weight and to the SSIM denominator; the variances here are
    computed from centred values (same value, better rounding).

    Args:
        context_fp (Tensor | Sequence[Tensor]): ``O^F = A·V`` per head, ``(B, H, N, d)``
            per layer; detached (target).
        context_q (Tensor | Sequence[Tensor]): ``O^Q``, same shapes; receives gradients.
        has_cls_token (bool): token 0 is a class token (dropped).
        top_ratio (float): fraction of tokens weighted ``w_high``, in [0, 1].
            Defaults to 0.1.
        w_high (float): weight of the important tokens. Defaults to 2.0.
        w_low (float): weight of the other tokens. Defaults to 1.0.
        mask_mode (str): ``'informative'`` (the ``k`` most important tokens of F) or
            ``'random'`` (``k`` tokens drawn uniformly). Defaults to ``'informative'``.
        generator (torch.Generator, optional): source of the random draw
            (``mask_mode='random'`` only). Defaults to None (global RNG).

    Returns:
        Tensor: scalar loss; 0 when ``O^Q == O^F``.
    """
    check_mask_mode(mask_mode)
    if not 0 <= top_ratio <= 1:
        raise ValueError(f'top_ratio must be in [0, 1], got {top_ratio}')
    if w_high <= 0 or w_low < 0:
        raise ValueError(f'weights must satisfy w_high > 0 and w_low >= 0, got '
                         f'w_high={w_high}, w_low={w_low}')
    o_fp = stack_layers(context_fp, 'context_fp').detach()  # (L, B, H, N, d)
    o_q = stack_layers(context_q, 'context_q')
    check_same_shape(o_fp, o_q, 'context_fp', 'context_q')
    if has_cls_token:
        o_fp, o_q = o_fp[..., 1:, :], o_q[..., 1:, :]
    n = o_fp.shape[3]
    importance = o_fp.abs().mean(dim=(2, 4))  # (L, B, N)
    k = min(n, max(1, int(round(top_ratio * n))))
    if mask_mode == 'random':  # k tokens per (layer, image), uniformly (ablation)
        device = generator.device if generator is not None else importance.device
        keys = torch.rand(importance.shape, generator=generator, device=device)
        top = keys.argsort(dim=-1)[..., :k].to(importance.device)  # (L, B, k)
    else:
        top = importance.topk(k, dim=-1).indices  # (L, B, k)
    w = torch.full_like(importance, w_low).scatter_(-1, top, w_high)
    w = (w / w.sum(dim=-1, keepdim=True))[:, :, None, :, None]  # (L, B, 1, N, 1)
    mu_fp = (w * o_fp).sum(dim=3, keepdim=True)  # (L, B, H, 1, d)
    mu_q = (w * o_q).sum(dim=3, keepdim=True)
    c_fp, c_q = o_fp - mu_fp, o_q - mu_q
    var_fp = (w * c_fp.pow(2)).sum(dim=3)  # (L, B, H, d)
    var_q = (w * c_q.pow(2)).sum(dim=3)
    cov = (w * c_fp * c_q).sum(dim=3)
    ssim = (2 * cov + SSIM_C2) / (var_fp + var_q + SSIM_C2)
    return 1 - ssim.mean()


def kd_kl_loss(logits_fp: Tensor, logits_q: Tensor,
               temperature: float = KD_TEMPERATURE) -> Tensor:
    """Logit distillation ``T²·KL(softmax(z_F/T) ‖ softmax(z_Q/T))``, batch mean.

    The KL is summed over classes and averaged over the batch (``batchmean``), as in
    the authors' code (T = 5, no cross-entropy term by default).

    Args:
        logits_fp (Tensor): teacher logits ``(B, C)``; detached.
        logits_q (Tensor): student logits ``(B, C)``.
        temperature (float): softmax temperature ``T``. Defaults to 5.0.

    Returns:
        Tensor: scalar loss, 0 for equal logits and positive otherwise.
    """
    check_same_shape(logits_fp, logits_q, 'logits_fp', 'logits_q')
    if logits_q.dim() != 2:
        raise ValueError(f'kd_kl_loss expects (B, C) logits, got {tuple(logits_q.shape)}; '
                         'use pixel_kl_loss for dense logits')
    t = float(temperature)
    log_p = F.log_softmax(logits_fp.detach() / t, dim=1)
    log_q = F.log_softmax(logits_q / t, dim=1)
    return t * t * F.kl_div(log_q, log_p, reduction='batchmean', log_target=True)


def pixel_kl_loss(logits_fp: Tensor, logits_q: Tensor,
                  temperature: float = DENSE_KD_TEMPERATURE) -> Tensor:
    """Pixel-wise KD for segmentation: ``T²·KL`` over the class axis, mean over pixels.

    For every image and pixel, ``KL(softmax(z_F/T) ‖ softmax(z_Q/T))`` over the class
    dimension (dim 1); the result is averaged over images and pixels. The ``T²`` factor
    *(ours)* keeps gradients comparable across temperatures (1 at the default T = 1).

    Args:
        logits_fp (Tensor): teacher logits ``(B, C, H, W)`` (any ``(B, C, ...)``); detached.
        logits_q (Tensor): student logits, same shape.
        temperature (float): softmax temperature. Defaults to 1.0.

    Returns:
        Tensor: scalar loss.
    """
    check_same_shape(logits_fp, logits_q, 'logits_fp', 'logits_q')
    if logits_q.dim() < 2:
        raise ValueError(f'pixel_kl_loss expects (B, C, ...) logits, got '
                         f'{tuple(logits_q.shape)}')
    t = float(temperature)
    log_p = F.log_softmax(logits_fp.detach() / t, dim=1)
    log_q = F.log_softmax(logits_q / t, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)  # (B, H, W)
    return t * t * kl.mean()


def feature_mse_loss(feats_fp: Tensor | Sequence[Tensor],
                     feats_q: Tensor | Sequence[Tensor]) -> Tensor:
    """Normalised MSE between backbone feature maps, averaged over levels *(ours)*.

    Each level ``(B, C, H, W)`` (any ``(B, C, ...)``) is L2-normalised over the channel
    dimension (``F.normalize(dim=1)``) in both models; the loss of a level is the mean
    squared error of the normalised maps, and levels are averaged with equal weight.

    Args:
        feats_fp (Tensor | Sequence[Tensor]): teacher feature maps; detached.
        feats_q (Tensor | Sequence[Tensor]): student feature maps, same shapes.

    Returns:
        Tensor: scalar loss, 0 when the maps agree up to a positive per-pixel scale.
    """
    fps = [feats_fp] if isinstance(feats_fp, Tensor) else list(feats_fp)
    qs = [feats_q] if isinstance(feats_q, Tensor) else list(feats_q)
    if not fps or len(fps) != len(qs):
        raise ValueError(f'feats_fp has {len(fps)} levels and feats_q {len(qs)}; pass the '
                         'same non-empty list of levels for both models')
    losses = []
    for level, (f_fp, f_q) in enumerate(zip(fps, qs)):
        check_same_shape(f_fp, f_q, f'feats_fp[{level}]', f'feats_q[{level}]')
        losses.append(F.mse_loss(F.normalize(f_q, dim=1),
                                 F.normalize(f_fp.detach(), dim=1)))
    return torch.stack(losses).mean()
