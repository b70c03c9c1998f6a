"""Inter-head attention similarity loss ``L_head`` (MimiQ), a MaskAQ synthesis term."""
from collections.abc import Sequence

from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import inter_head_ssim_loss


@MODELS.register_module()
class InterHeadSSIMLoss(nn.Module):
    """``loss_weight · L_head``; see :func:`.functional.inter_head_ssim_loss`.

    Args:
        loss_weight (float): multiplier of the loss. Defaults to 1.0 (MaskAQ).

    Examples:
        >>> import torch
        >>> loss = InterHeadSSIMLoss(loss_weight=2.0)
        >>> scores = torch.arange(5.).expand(1, 3, 5, 5)  # (B, H, 1 + 2*2, 1 + 2*2)
        >>> loss(scores, has_cls_token=True, grid=(2, 2)).item()  # all heads alike
        0.0
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.loss_weight = float(loss_weight)

    def forward(self, scores: Tensor | Sequence[Tensor], *, has_cls_token: bool,
                grid: tuple[int, int]) -> Tensor:
        """Compute the weighted loss.

        Args:
            scores (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per layer.
            has_cls_token (bool): token 0 of queries and keys is a class token.
            grid (tuple[int, int]): ``(h, w)`` of the patch key tokens.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * inter_head_ssim_loss(
            scores, has_cls_token=has_cls_token, grid=grid)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
