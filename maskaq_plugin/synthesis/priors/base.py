"""Task priors: the semantic term ``L_sem`` of Stage 1, one class per task."""
from typing import Any

import torch
from torch import nn


class TaskPrior:
    """Interface of a task prior used by :class:`~maskaq_plugin.synthesis.Synthesizer`.

    A prior draws random targets once per batch (:meth:`sample`) and scores the
    full-precision model's output on the synthetic images against them (:meth:`loss`,
    the ``L_sem`` of docs/method.md). The synthesizer records the teacher's attention while
    :meth:`loss` runs, so :meth:`loss` must run the teacher exactly once on ``x``.
    """

    def sample(self, batch_size: int, generator: torch.Generator) -> Any:
        """Draw random targets for ``batch_size`` images.

        Args:
            batch_size (int): Number of images in the batch.
            generator (torch.Generator): CPU generator of the batch (reproducibility).

        Returns:
            Any: A tensor whose first dimension is the batch, or a list with one item
            per image.
        """
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor, targets: Any) -> torch.Tensor:
        """``L_sem``: run ``model`` once on ``x`` (B, C, H, W) and return a scalar loss."""
        raise NotImplementedError
