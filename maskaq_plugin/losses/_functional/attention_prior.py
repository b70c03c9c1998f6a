"""Attention priors of the synthesis stage: inter-head SSIM (L_head) and patch entropy (L_ent).

Both read the raw scores ``S = Q·Kᵀ`` of the full-precision model F, shape
``(B, H, N, Nk)`` per layer (window attention: ``B·nW`` windows as the batch). Queries run
along ``N`` and keys along ``Nk``; with spatial-reduction attention (PVT, SegFormer)
``Nk < N`` and the keys are pooled tokens, not a subset of the queries.

References:
    MaskAQ: Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked
    Attention Alignment for Data-Free Quantization of Vision Transformers", ICML 2026.
    MimiQ: Choi et al., "MimiQ: Low-Bit Data-Free Quantization of Vision Transformers
    with Encouraging Inter-Head Attention Similarity" (source of L_head).
    PSAQ-ViT: Li et al., "Patch Similarity Aware Data-Free Quantization for Vision
    Transformers", ECCV 2022 (source of the patch-similarity entropy).
"""
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._head_stats import head_row_stats
from ._utils import layer_list

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
_RANGE_EPS = 1e-8  # guards the min-max normalisation of a constant row (authors' value)
_NORM_EPS = 1e-6  # guards the L2 normalisation of an all-zero row (authors' value)
_VAR_EPS = 1e-8  # keeps log(Var) finite when all similarities are equal (authors' value)


def inter_head_ssim_loss(scores: Tensor | Sequence[Tensor], *, has_cls_token: bool,
                         grid: tuple[int, int]) -> Tensor:
    """Inter-head attention similarity loss ``L_head`` (MimiQ, used by MaskAQ).

    For every layer, image and query row, each head's score row over the patch keys is
    a map on the key grid. Each map is min-max normalised to [0, 1] (``(s - min) /
    (max - min + 1e-8)``) and the global SSIM (means, population variances and
    covariance over all elements of the map, ``C1 = 0.01²``, ``C2 = 0.03²``) is taken
    between every ordered pair of heads ``(i, j)``, which gives an ``H×H`` SSIM matrix::

        L_head = mean over (layer, image, query row, i, j) of (1 - SSIM_ij²)

    The mean runs over the **full** ``H×H`` matrix, diagonal included (its terms are 0:
    ``SSIM_ii = 1``), as in the authors' code (``(1 - ssim_map**2).mean()`` in
    ``ssim_loss_att_map`` and, per layer, in ``ssim_loss_att_map_swin``); the pair mean
    over ``i < j`` is ``H/(H-1)`` times this value. A single-head layer (``H = 1``) gives
    0. All layers of a group have the same shape, so the mean of the per-layer means is
    one mean over the stack.

    Axes: the map runs over **keys** (``Nk``); the loss averages over **queries**
    (``N``). With a class token, the class-token query row and the class-token key
    column are both dropped, so only patch queries contribute (as in the authors'
    code). Since the SSIM is global, the spatial layout of the map does not change the
    value; ``grid`` documents and validates the key layout.

    Args:
        scores (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per
            layer, all layers of one group equally shaped.
        has_cls_token (bool): token 0 of queries and keys is a class token.
        grid (tuple[int, int]): ``(h, w)`` of the patch **key** tokens (ViT: (14, 14);
            Swin: the window; PVT: the reduced key grid); ``h * w`` must equal the
            number of patch keys.

    Returns:
        Tensor: scalar loss in [0, 1]; 0 when all heads have the same attention map,
        and 0 for ``H = 1``.
    """
    layers = layer_list(scores, 'scores')  # L x (B, H, N, Nk)
    num_keys = layers[0].shape[-1] - int(has_cls_token)
    h, w = grid
    if h * w != num_keys:
        raise ValueError(f'grid={tuple(grid)} has {h * w} cells but the scores have '
                         f'{num_keys} patch keys (Nk={num_keys + int(has_cls_token)}, '
                         f'has_cls_token={has_cls_token}); pass the (h, w) of the key tokens')
    ssim = []
    for s in layers:
        if has_cls_token:
            s = s[..., 1:, 1:]
        # statistics of the raw rows give those of the min-max normalised maps
        # x = (s - lo) / d (see _head_stats), without building x
        lo, hi, mean, cov = head_row_stats(s)  # (B, H, N'), (B, N', H, H)
        d = ((hi - lo) + _RANGE_EPS).transpose(1, 2)  # (B, N', H)
        mu = (mean - lo).transpose(1, 2) / d
        cov = cov / (d.unsqueeze(-1) * d.unsqueeze(-2))
        # variances from the diagonal of the same matrix, so that SSIM_ii is exactly 1
        var = cov.diagonal(dim1=-2, dim2=-1)  # (B, N', H)
        mu_sq = mu * mu
        mu_i, mu_j = mu.unsqueeze(-1), mu.unsqueeze(-2)  # rows i, columns j of H×H
        ssim.append(((2 * mu_i * mu_j + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mu_sq.unsqueeze(-1) + mu_sq.unsqueeze(-2) + SSIM_C1) *
            (var.unsqueeze(-1) + var.unsqueeze(-2) + SSIM_C2)))  # (B, N', H, H)
    return (1 - torch.stack(ssim).pow(2)).mean()


def patch_similarity_entropy(scores: Tensor | Sequence[Tensor], *, has_cls_token: bool,
                             num_rows: int = 64,
                             generator: torch.Generator | None = None) -> Tensor:
    """Negative differential entropy of patch similarity, ``L_ent`` (MaskAQ, PSAQ-ViT).

    Per layer and image: average the scores over heads, drop the class-token row and
    column, draw ``num_rows`` query rows at random without replacement (all rows, in
    order, when there are not more than ``num_rows``; no random number is drawn then),
    L2-normalise them (eps 1e-6), take their ``r×r`` cosine-similarity matrix and
    estimate its differential entropy as that of a Gaussian with the same variance::

        h = ½·log(2πe·(Var(sims) + 1e-8)),    L_ent = -mean(h) over layers and images

    ``Var`` is the population variance (``unbiased=False``) over **all** ``r²`` entries of
    the matrix, diagonal included, as in the authors' code. The ``1e-8`` keeps ``h``
    finite for identical rows (authors' value).

    Axes: rows are **queries** (``N``), each a vector over **keys** (``Nk``), so
    ``Nk != N`` (spatial-reduction attention) is well defined; the rows are compared with
    each other over the key axis.

    Args:
        scores (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per layer.
        has_cls_token (bool): token 0 of queries and keys is a class token.
        num_rows (int): rows drawn per layer and image. Defaults to 64.
        generator (torch.Generator, optional): source of the row draw (the rows of
            each layer and image are drawn independently). Defaults to None (global RNG).

    Returns:
        Tensor: scalar ``-mean(h)``; lower means more spread-out patch similarities.
    """
    if num_rows < 1:
        raise ValueError(f'num_rows must be >= 1, got {num_rows}')
    layers = layer_list(scores, 'scores')  # L x (B, H, N, Nk)
    if has_cls_token:
        layers = [t[:, :, 1:, 1:] for t in layers]
    batch, heads, n, num_keys = layers[0].shape
    if n > num_rows:  # draw the rows first, then average only them over the heads
        device = generator.device if generator is not None else layers[0].device
        keys = torch.rand(len(layers), batch, n, generator=generator, device=device)
        idx = keys.argsort(dim=-1)[..., :num_rows].to(layers[0].device)  # (L, B, r)
        layers = [t.gather(2, i[:, None, :, None].expand(-1, heads, -1, num_keys))
                  for t, i in zip(layers, idx)]  # L x (B, H, r, Nk)
    s = torch.stack([t.mean(dim=1) for t in layers])  # (L, B, r, Nk)
    v = F.normalize(s, p=2, dim=-1, eps=_NORM_EPS)
    sims = v @ v.transpose(-1, -2)  # (L, B, r, r)
    var = sims.flatten(2).var(dim=-1, unbiased=False)  # (L, B)
    h = 0.5 * (math.log(2 * math.pi * math.e) + torch.log(var + _VAR_EPS))
    return -h.mean()
