"""Pixel-wise logit distillation for segmentation (MaskAQ dense-task KD, ours)."""
from mmengine.registry import MODELS
from torch import Tensor, nn

from ._checks import set_loss_args
from .defaults import DENSE_KD_TEMPERATURE
from .functional import pixel_kl_loss


@MODELS.register_module()
class PixelKLLoss(nn.Module):
    """``loss_weight · pixel-wise T²·KL``; see :func:`.functional.pixel_kl_loss`.

    Args:
        temperature (float): softmax temperature. Defaults to 1.0.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, temperature: float = DENSE_KD_TEMPERATURE,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        set_loss_args(self, loss_weight, temperature)

    def forward(self, logits_fp: Tensor, logits_q: Tensor) -> Tensor:
        """Compute the weighted loss.

        Args:
            logits_fp (Tensor): teacher logits ``(B, C, H, W)`` (detached).
            logits_q (Tensor): student logits, same shape.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * pixel_kl_loss(logits_fp, logits_q, self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'
