"""Row statistics of raw attention scores for ``L_head``, with a hand-written backward.

The SSIM of ``L_head`` compares min-max normalised maps ``x = (r − lo) / d`` (``lo``,
``hi``: a row's min and max, ``d = hi − lo + ε``). Mean, variances and covariances of
``x`` follow from those of the raw rows::

    μ_x = (mean(r) − lo) / d,    cov_x(i, j) = cov_r(i, j) / (d_i·d_j)

so the normalised ``(B, H, N, P)`` maps never need to exist. :func:`head_row_stats`
returns ``lo``, ``hi``, ``mean(r)`` and the head×head covariance ``cov_r`` of every
query row; its backward is written out (one batched matmul plus a scatter at each
row's min and max) instead of autograd's chain through the normalisation, which made
``L_head`` cost about half of a DeiT-T synthesis iteration at 224 px
(docs/benchmarks.md, "Synthesis floor ratio (issue #12 item 4)"). The gradient of the
min and max is split evenly between tied entries, as ``torch.amin``/``torch.amax`` do.
"""
import torch
from torch import Tensor


class _HeadRowStats(torch.autograd.Function):
    """``(lo, hi, mean)`` per head and row, ``(B, H, N)``, and ``cov`` ``(B, N, H, H)``."""

    @staticmethod
    def forward(ctx, s):  # s: (B, H, N, P), any strides
        lo, lo_idx = s.min(dim=-1)
        hi, hi_idx = s.max(dim=-1)
        m = s.mean(dim=-1)
        b, h, n, p = s.shape
        rt = s.new_empty(b, n, h, p)  # centred rows, heads next to each other
        torch.sub(s.transpose(1, 2), m.transpose(1, 2).unsqueeze(-1), out=rt)
        cov = rt @ rt.transpose(-1, -2) / p  # (B, N, H, H)
        ctx.save_for_backward(s, rt, lo, hi, lo_idx, hi_idx)
        return lo, hi, m, cov

    @staticmethod
    def backward(ctx, g_lo, g_hi, g_m, g_cov):
        s, rt, lo, hi, lo_idx, hi_idx = ctx.saved_tensors
        p = s.shape[-1]
        # cov = rc·rcᵀ / P with rc = r − mean(r): ∂/∂rc = (G + Gᵀ)·rc / P; its mean over
        # the row is (G + Gᵀ)·mean(rc) / P = 0, so it adds nothing through mean(r)
        grad = ((g_cov + g_cov.transpose(-1, -2)) / p) @ rt  # (B, N, H, P)
        grad += (g_m / p).transpose(1, 2).unsqueeze(-1)
        for value, idx, g in ((lo, lo_idx, g_lo), (hi, hi_idx, g_hi)):
            hit = s == value.unsqueeze(-1)  # (B, H, N, P)
            count = hit.sum(dim=-1)
            if bool((count == 1).all()):  # one min / max per row: add at its index
                grad.scatter_add_(-1, idx.transpose(1, 2).unsqueeze(-1),
                                  g.transpose(1, 2).unsqueeze(-1))
            else:  # ties share the gradient, as in torch.amin / torch.amax
                grad += torch.where(hit, (g / count).unsqueeze(-1), 0).transpose(1, 2)
        return grad.transpose(1, 2)  # (B, H, N, P)


def head_row_stats(s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Min, max and mean of every score row, and the covariance between heads.

    Args:
        s (Tensor): ``(B, H, N, P)`` scores; rows run over the last axis.

    Returns:
        tuple[Tensor, Tensor, Tensor, Tensor]: ``lo``, ``hi``, ``mean`` of shape
        ``(B, H, N)`` and ``cov`` of shape ``(B, N, H, H)`` (population covariance of
        the rows of heads ``i`` and ``j`` at query ``n``).
    """
    return _HeadRowStats.apply(s)
