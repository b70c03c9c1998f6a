"""Transcriptions of the authors' inter-head SSIM (github.com/hfutqian/MaskAQ,
``MaskAQ/hydra_image_gen_ssim_att_map.py``), written out with plain torch ops: the maps
are min-max normalised, means over the map, variances and covariances as E[x²] − μ², the
H×H SSIM matrix by broadcasting with ``unsqueeze``, and ``(1 - ssim**2).mean()``.
Shared by tests/test_losses and tests/test_synthesis.
"""
import torch

C1, C2 = 0.01**2, 0.03**2


def authors_swin_layer(att, grid):
    """One layer of ``ssim_loss_att_map_swin(..., mode='loss')``: ``(1 - ssim**2).mean()``."""
    h, w = grid
    batch, heads, n, d = att.shape
    att_map = att.permute(0, 2, 1, 3).reshape(batch * n, heads, d)
    att_map = att_map - att_map.min(-1, keepdim=True)[0]
    att_map = att_map / (att_map.max(-1, keepdim=True)[0] + 1e-8)
    att_map = att_map.reshape(batch * n, heads, h, w)
    mu = att_map.mean([-2, -1])
    mu_sq = mu.pow(2)
    mu1_mu2 = mu.unsqueeze(1) * mu.unsqueeze(2)
    sigma_sq = (att_map * att_map).mean([-2, -1]) - mu_sq
    sigma12 = (att_map.unsqueeze(1) * att_map.unsqueeze(2)).mean([-2, -1]) - mu1_mu2
    ssim = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / (
        (mu_sq.unsqueeze(1) + mu_sq.unsqueeze(2) + C1) *
        (sigma_sq.unsqueeze(1) + sigma_sq.unsqueeze(2) + C2))
    return (1 - ssim**2).mean()


def authors_swin(layers, grid):
    """``torch.stack(ssim_loss_att_map_swin(layers, mode='loss')).mean()``."""
    return torch.stack([authors_swin_layer(att, grid) for att in layers]).mean()


def authors_vit(layers, grid):
    """``ssim_loss_att_map`` + ``(1 - ssim_map**2).mean()`` over the stacked layers, class
    row and column dropped; the layers are equally shaped, so the mean over the stack is
    the mean of the per-layer means."""
    return authors_swin([att[:, :, 1:, 1:] for att in layers], grid)
