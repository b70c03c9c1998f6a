"""Arguments shared by the registered loss modules."""
from typing import Optional

from torch import nn


def set_loss_args(module: nn.Module, loss_weight: float,
                  temperature: Optional[float] = None) -> None:
    """Check and store ``loss_weight`` (and ``temperature``) on ``module`` as floats;
    ``ValueError`` names a negative weight or a non-positive temperature."""
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        module.temperature = float(temperature)
    if loss_weight < 0:
        raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
    module.loss_weight = float(loss_weight)
