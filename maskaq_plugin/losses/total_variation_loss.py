"""Total variation image prior ``L_tv`` (MaskAQ synthesis term)."""
from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import total_variation


@MODELS.register_module()
class TotalVariationLoss(nn.Module):
    """``loss_weight · L_tv``; see :func:`.functional.total_variation`.

    Apply it to the un-augmented images being optimised.

    Args:
        loss_weight (float): multiplier of the loss. Defaults to 2.5e-5 (MaskAQ).
    """

    def __init__(self, loss_weight: float = 2.5e-5) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.loss_weight = float(loss_weight)

    def forward(self, x: Tensor) -> Tensor:
        """Compute the weighted loss.

        Args:
            x (Tensor): images ``(B, C, H, W)``.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * total_variation(x)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
