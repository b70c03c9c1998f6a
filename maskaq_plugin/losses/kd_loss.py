"""Logit distillation loss ``T²·KL(softmax(z_F/T) ‖ softmax(z_Q/T))`` (MaskAQ QAT term)."""
from mmengine.registry import MODELS
from torch import Tensor, nn

from ._checks import set_loss_args
from .defaults import KD_TEMPERATURE
from .functional import kd_kl_loss


@MODELS.register_module()
class KDLoss(nn.Module):
    """``loss_weight · T²·KL``; see :func:`.functional.kd_kl_loss`.

    Args:
        temperature (float): softmax temperature ``T``. Defaults to 5.0 (MaskAQ).
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, temperature: float = KD_TEMPERATURE, loss_weight: float = 1.0) -> None:
        super().__init__()
        set_loss_args(self, loss_weight, temperature)

    def forward(self, logits_fp: Tensor, logits_q: Tensor) -> Tensor:
        """Compute the weighted loss.

        Args:
            logits_fp (Tensor): teacher logits ``(B, C)`` (detached).
            logits_q (Tensor): student logits ``(B, C)``.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * kd_kl_loss(logits_fp, logits_q, self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'
