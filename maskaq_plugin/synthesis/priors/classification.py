"""Classification prior: cross-entropy of the teacher's logits against random labels."""
import torch
import torch.nn.functional as F
from torch import nn

from .base import TaskPrior


class ClassificationPrior(TaskPrior):
    """``L_sem`` for classifiers (docs/method.md): ``CE(F(x), y)`` with random labels ``y``.

    Labels are drawn once per batch, uniformly over the classes, and kept for all the
    iterations of that batch.

    Args:
        num_classes (int): Number of classes of the classifier's logits.

    Examples:
        >>> import torch
        >>> prior = ClassificationPrior(num_classes=10)
        >>> prior.sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4])
    """

    def __init__(self, num_classes: int):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}')
        self.num_classes = num_classes

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Random labels ``(B,)`` (int64, on the generator's device)."""
        return torch.randint(self.num_classes, (batch_size, ), generator=generator,
                             device=generator.device)

    def loss(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``model(x)`` (B, num_classes) against ``targets`` (B,)."""
        logits = model(x)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f'ClassificationPrior(num_classes={self.num_classes}) expects '
                             f'(B, {self.num_classes}) logits, got {tuple(logits.shape)}; '
                             'pass the classifier\'s number of classes')
        return F.cross_entropy(logits, targets.to(logits.device))
