"""Masked attention difference loss ``L_mad`` (MaskAQ selective coupling term)."""
from collections.abc import Sequence

from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import masked_attention_difference


@MODELS.register_module()
class MaskedAttentionDifferenceLoss(nn.Module):
    """``loss_weight · L_mad``; see :func:`.functional.masked_attention_difference`.

    The mask comes from :func:`.functional.informative_region_mask` on the same group
    of layers of F.

    Args:
        loss_weight (float): multiplier of the loss. Defaults to 0.1 (MaskAQ).
    """

    def __init__(self, loss_weight: float = 0.1) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.loss_weight = float(loss_weight)

    def forward(self, scores_fp: Tensor | Sequence[Tensor],
                scores_q: Tensor | Sequence[Tensor], mask: Tensor, *,
                has_cls_token: bool) -> Tensor:
        """Compute the weighted loss.

        Args:
            scores_fp (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)``
                per layer.
            scores_q (Tensor | Sequence[Tensor]): raw scores of Q, same shapes.
            mask (Tensor): ``(B, P)`` informative-region mask over patch keys.
            has_cls_token (bool): token 0 of queries and keys is a class token.

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * masked_attention_difference(
            scores_fp, scores_q, mask, has_cls_token=has_cls_token)

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
