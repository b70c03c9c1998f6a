"""Masked attention-output SSIM loss ``L_mssim`` (MaskAQ QAT term)."""
from collections.abc import Sequence

from mmengine.registry import MODELS
from torch import Tensor, nn

from .defaults import MSSIM_WEIGHT, TOP_RATIO, W_HIGH, W_LOW
from .functional import check_mask_mode, masked_attention_ssim


@MODELS.register_module()
class MaskedAttentionSSIMLoss(nn.Module):
    """``loss_weight · L_mssim``; see :func:`.functional.masked_attention_ssim`.

    ``w_high == w_low`` gives MimiQ's unmasked attention-output SSIM.

    Args:
        top_ratio (float): fraction of tokens weighted ``w_high``. Defaults to 0.1.
        w_high (float): weight of the important tokens. Defaults to 2.0.
        w_low (float): weight of the other tokens. Defaults to 1.0.
        loss_weight (float): multiplier λ of the loss. Defaults to 10.0 (MaskAQ).
        mask_mode (str): ``'informative'`` or ``'random'`` (ablation: as many tokens,
            drawn uniformly). Defaults to ``'informative'``.
    """

    def __init__(self, top_ratio: float = TOP_RATIO, w_high: float = W_HIGH,
                 w_low: float = W_LOW, loss_weight: float = MSSIM_WEIGHT,
                 mask_mode: str = 'informative') -> None:
        super().__init__()
        if not 0 <= top_ratio <= 1:
            raise ValueError(f'top_ratio must be in [0, 1], got {top_ratio}')
        if w_high <= 0 or w_low < 0:
            raise ValueError(f'weights must satisfy w_high > 0 and w_low >= 0, got '
                             f'w_high={w_high}, w_low={w_low}')
        check_mask_mode(mask_mode)
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.top_ratio = float(top_ratio)
        self.w_high = float(w_high)
        self.w_low = float(w_low)
        self.loss_weight = float(loss_weight)
        self.mask_mode = mask_mode

    def forward(self, context_fp: Tensor | Sequence[Tensor],
                context_q: Tensor | Sequence[Tensor], *, has_cls_token: bool) -> Tensor:
        """Compute the weighted loss.

        Args:
            context_fp (Tensor | Sequence[Tensor]): ``A·V`` of F, ``(B, H, N, d)`` per
                layer (target, detached).
            context_q (Tensor | Sequence[Tensor]): ``A·V`` of Q, same shapes.
            has_cls_token (bool): token 0 is a class token.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * masked_attention_ssim(
            context_fp, context_q, has_cls_token=has_cls_token, top_ratio=self.top_ratio,
            w_high=self.w_high, w_low=self.w_low, mask_mode=self.mask_mode)

    def extra_repr(self) -> str:
        return (f'top_ratio={self.top_ratio}, w_high={self.w_high}, w_low={self.w_low}, '
                f'loss_weight={self.loss_weight}, mask_mode={self.mask_mode!r}')
