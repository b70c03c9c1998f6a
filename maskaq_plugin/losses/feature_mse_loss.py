"""Normalised feature-map MSE between backbones (MaskAQ dense-task KD, ours)."""
from collections.abc import Sequence

from mmengine.registry import MODELS
from torch import Tensor, nn

from ._checks import set_loss_args
from .functional import feature_mse_loss


@MODELS.register_module()
class FeatureMSELoss(nn.Module):
    """``loss_weight · normalised MSE``; see :func:`.functional.feature_mse_loss`.

    Args:
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        set_loss_args(self, loss_weight)

    def forward(self, feats_fp: Tensor | Sequence[Tensor],
                feats_q: Tensor | Sequence[Tensor]) -> Tensor:
        """Compute the weighted loss.

        Args:
            feats_fp (Tensor | Sequence[Tensor]): teacher feature maps per level
                ``(B, C, H, W)`` (detached).
            feats_q (Tensor | Sequence[Tensor]): student feature maps, same shapes.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * feature_mse_loss(feats_fp, feats_q)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
