"""Selective coupling of the synthesis stage: informative-region mask and ``L_mad`` (MaskAQ).

Both reduce the raw scores ``S = Q·Kᵀ`` (``(B, H, N, Nk)`` per layer; window attention:
``B·nW`` windows as the batch) to one importance value per **key** token: the
head-averaged class-token row over patch keys, or, without a class token, the mean over
query rows *(ours)*. So ``P`` below is the number of patch keys (``Nk - 1`` with a class
token, ``Nk`` otherwise; the reduced key grid for spatial-reduction attention).

Reference:
    MaskAQ: Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked
    Attention Alignment for Data-Free Quantization of Vision Transformers", ICML 2026.
"""
from collections.abc import Sequence

import torch
from torch import Tensor

from ._utils import check_same_shape, key_profile


MASK_MODES = ('informative', 'random')


def check_mask_mode(mask_mode: str) -> None:
    """Raise ``ValueError`` naming ``mask_mode`` unless it is one of :data:`MASK_MODES`."""
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode={mask_mode!r} is unknown; use one of {list(MASK_MODES)} "
                         "('random' is the ablation: as many tokens, drawn uniformly)")


def informative_region_mask(scores: Tensor | Sequence[Tensor], *, ratio: float,
                            has_cls_token: bool, drop: float = 0.3,
                            generator: torch.Generator | None = None,
                            mask_mode: str = 'informative') -> Tensor:
    """Informative-region mask of F: top-``ratio`` patch keys, then a random drop.

    The scores are averaged over layers and heads and reduced to one value per patch
    key (class-token row, or mean over query rows without a class token *(ours)*). Per
    image, the ``k = min(P, max(1, int(ratio·P)))`` largest keys are kept (rounded
    down, as the authors' ``int(len(att_b) * ratio)``; e.g. ``P = 49``, ``ρ = 0.3``
    gives 14.7, so 14 keys), then ``max(1, round(k·(1 - drop)))`` of them stay, drawn
    uniformly without replacement (the authors' formula; Python rounding, half to
    even). Every image has the same number of ones. (For Swin the authors' code ranks
    all ``N·N`` entries of the averaged score map instead of key tokens; docs/method.md's
    per-key reduction is used here.)

    ``mask_mode='random'`` is the ablation *(ours)*: the same number of ones per image,
    ``max(1, round(k·(1 - drop)))``, on patch keys drawn uniformly without replacement
    from all ``P``, independent of the scores.

    Args:
        scores (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per layer.
        ratio (float): kept fraction ρ_t in (0, 1] (MaskAQ: 0.5 decaying to 0.1).
        has_cls_token (bool): token 0 of queries and keys is a class token.
        drop (float): fraction of the kept keys dropped at random, in [0, 1).
            Defaults to 0.3.
        generator (torch.Generator, optional): source of the random drop.
            Defaults to None (global RNG).
        mask_mode (str): ``'informative'`` (top keys of F, then the drop) or
            ``'random'`` (as many keys, uniformly at random). Defaults to
            ``'informative'``.

    Returns:
        Tensor: ``(B, P)`` float mask of 0/1 in the dtype of ``scores``, without grad.
    """
    check_mask_mode(mask_mode)
    if not 0 < ratio <= 1:
        raise ValueError(f'ratio must be in (0, 1], got {ratio}')
    if not 0 <= drop < 1:
        raise ValueError(f'drop must be in [0, 1), got {drop}')
    with torch.no_grad():
        importance = key_profile(scores, has_cls_token).mean(0)
        batch, num_keys = importance.shape  # (B, P)
        k = min(num_keys, max(1, int(ratio * num_keys)))  # floor, as the authors
        keep = max(1, int(round(k * (1 - drop))))
        device = generator.device if generator is not None else importance.device
        if mask_mode == 'random':  # as many keys, uniformly among all P (ablation)
            pick = torch.rand(batch, num_keys, generator=generator, device=device)
            idx = pick.argsort(-1)[:, :keep].to(importance.device)  # (B, keep)
        else:
            idx = importance.topk(k, dim=-1).indices  # (B, k)
            if keep < k:
                pick = torch.rand(batch, k, generator=generator, device=device).argsort(-1)
                idx = idx.gather(1, pick[:, :keep].to(idx.device))  # (B, keep)
        mask = torch.zeros_like(importance)
        mask.scatter_(1, idx, 1.0)
    return mask


def masked_attention_difference(scores_fp: Tensor | Sequence[Tensor],
                                scores_q: Tensor | Sequence[Tensor], mask: Tensor, *,
                                has_cls_token: bool) -> Tensor:
    """Masked attention difference between F and Q, ``L_mad`` (MaskAQ)::

        L_mad = mean_{l, b} Σ_p |s^F_l(b, p) - s^Q_l(b, p)|·M(b, p) / Σ_p M(b, p)

    where ``s_l`` is layer ``l``'s head-averaged class-token score row over the patch
    keys (no class token: mean over query rows *(ours)*), i.e. the same reduction as
    :func:`informative_region_mask` but per layer. The ratio is taken per image and then
    averaged over images *(ours)*; the authors divide batch sums, which is the same when
    every image has the same number of ones (always so for
    :func:`informative_region_mask`). An image whose mask is all zero contributes 0.
    Gradients flow into both ``scores_fp`` and ``scores_q`` (synthesis optimises the
    images through both models). Note: the authors' code returns 0 for Swin (its Swin
    branch never adds to the loss); here every attention layout is handled alike.

    Args:
        scores_fp (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per layer.
        scores_q (Tensor | Sequence[Tensor]): raw scores of Q, same shapes.
        mask (Tensor): ``(B, P)`` weights, usually 0/1 from
            :func:`informative_region_mask`.
        has_cls_token (bool): token 0 of queries and keys is a class token.

    Returns:
        Tensor: scalar loss.
    """
    s_fp = key_profile(scores_fp, has_cls_token, 'scores_fp')  # (L, B, P)
    s_q = key_profile(scores_q, has_cls_token, 'scores_q')
    check_same_shape(s_fp, s_q, 'scores_fp', 'scores_q')
    if tuple(mask.shape) != tuple(s_fp.shape[1:]):
        raise ValueError(f'mask has shape {tuple(mask.shape)} but the scores give '
                         f'{tuple(s_fp.shape[1:])} (B, patch keys); build it from the '
                         'same group of layers')
    m = mask.to(s_fp.dtype)
    num = ((s_fp - s_q).abs() * m).sum(dim=-1)  # (L, B)
    den = m.sum(dim=-1).clamp_min(1e-8)  # (B,)
    return (num / den).mean()
