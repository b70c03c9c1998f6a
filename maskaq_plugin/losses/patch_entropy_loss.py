"""Patch-similarity entropy loss ``L_ent`` (MaskAQ decoupling term, after PSAQ-ViT)."""
from collections.abc import Sequence

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import patch_similarity_entropy


@MODELS.register_module()
class PatchEntropyLoss(nn.Module):
    """``loss_weight · L_ent``; see :func:`.functional.patch_similarity_entropy`.

    Args:
        num_rows (int): query rows drawn per layer and image. Defaults to 64.
        loss_weight (float): multiplier of the loss. Defaults to 1.0 (MaskAQ).
    """

    def __init__(self, num_rows: int = 64, loss_weight: float = 1.0) -> None:
        super().__init__()
        if num_rows < 1:
            raise ValueError(f'num_rows must be >= 1, got {num_rows}')
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        self.num_rows = int(num_rows)
        self.loss_weight = float(loss_weight)

    def forward(self, scores: Tensor | Sequence[Tensor], *, has_cls_token: bool,
                generator: torch.Generator | None = None) -> Tensor:
        """Compute the weighted loss.

        Args:
            scores (Tensor | Sequence[Tensor]): raw scores of F, ``(B, H, N, Nk)`` per layer.
            has_cls_token (bool): token 0 of queries and keys is a class token.
            generator (torch.Generator, optional): source of the row draw.
                Defaults to None (global RNG).

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * patch_similarity_entropy(
            scores, has_cls_token=has_cls_token, num_rows=self.num_rows, generator=generator)

    def extra_repr(self) -> str:
        return f'num_rows={self.num_rows}, loss_weight={self.loss_weight}'
