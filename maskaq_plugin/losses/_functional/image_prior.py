"""Image prior of the synthesis stage: total variation ``L_tv``.

References:
    MaskAQ: Qian et al., ICML 2026 (weight 2.5e-5 on the un-augmented images).
    The form follows the l2 image prior of DeepInversion (Yin et al., "Dreaming to
    Distill", CVPR 2020), with the diagonal terms divided by √2 as in the MaskAQ code.
"""
import math

from torch import Tensor


def total_variation(x: Tensor) -> Tensor:
    """Total variation: L2 norms of the pixel differences in four directions.

    With ``x`` of shape ``(B, C, H, W)``::

        d_h  = x[..., :, :-1]  - x[..., :, 1:]     # horizontal
        d_v  = x[..., :-1, :]  - x[..., 1:, :]     # vertical
        d_a  = x[..., 1:, :-1] - x[..., :-1, 1:]   # anti-diagonal
        d_d  = x[..., :-1, :-1] - x[..., 1:, 1:]   # diagonal
        L_tv = ‖d_h‖ + ‖d_v‖ + (‖d_a‖ + ‖d_d‖) / √2

    Each ``‖·‖`` is the Frobenius norm of the whole difference tensor (all images and
    channels together, not a per-image mean), exactly as in the authors' code, so the
    value grows with the square root of the batch size.

    Args:
        x (Tensor): images ``(B, C, H, W)``.

    Returns:
        Tensor: scalar loss.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[[[0., 1.], [2., 3.]]]])
        >>> round(total_variation(x).item(), 4)  # √2 + 2√2 + (1 + 3)/√2 = 5√2
        7.0711
    """
    if x.dim() != 4:
        raise ValueError(f'total_variation expects (B, C, H, W) images, got shape '
                         f'{tuple(x.shape)}')
    d_h = x[..., :, :-1] - x[..., :, 1:]
    d_v = x[..., :-1, :] - x[..., 1:, :]
    d_a = x[..., 1:, :-1] - x[..., :-1, 1:]
    d_d = x[..., :-1, :-1] - x[..., 1:, 1:]
    return d_h.norm() + d_v.norm() + (d_a.norm() + d_d.norm()) / math.sqrt(2)
