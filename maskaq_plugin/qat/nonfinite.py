"""The non-finite-loss policy of Stage 2, the same for both entry points.

A QAT step whose loss is non-finite is **skipped** (no backward, no optimizer update, the
learning-rate schedule still advances) and counted; ``max_steps`` such steps *in a row*
stop the run with :class:`NonFiniteLossError`. One bad batch (an overflow on an extreme
synthetic image) does not end a long run, while a diverged student (every step
non-finite) stops within ``max_steps`` steps instead of training on nothing. Under
``torch.distributed`` the decision is collective: a step is skipped on every rank when
any rank sees a non-finite loss, so DDP ranks stay in step.
"""
from typing import Dict

import torch
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from torch import Tensor

from ..losses.defaults import MAX_NONFINITE_STEPS


class NonFiniteLossError(FloatingPointError):
    """Too many QAT steps in a row had a non-finite loss."""


class NonFiniteGuard:
    """Decides whether a QAT step may update the student (see the module docstring).

    Args:
        max_steps (int): Non-finite steps in a row that raise. 1 raises on the first.
            Defaults to 10.

    Examples:
        >>> guard = NonFiniteGuard(max_steps=2)
        >>> guard.check(dict(loss=torch.tensor(1.0)))
        True
        >>> guard.check(dict(loss=torch.tensor(float('nan')))), guard.in_row, guard.total
        (False, 1, 1)
    """

    def __init__(self, max_steps: int = MAX_NONFINITE_STEPS):
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f'max_nonfinite_steps must be an int >= 1, got {max_steps!r}')
        self.max_steps = max_steps
        self.in_row = 0
        self.total = 0

    def check(self, terms: Dict[str, Tensor]) -> bool:
        """True when the sum of ``terms`` is finite on every rank; otherwise count the
        step (a warning in the log) and return False, or raise
        :class:`NonFiniteLossError` when it is the ``max_steps``-th in a row."""
        total = sum(v.detach().float() for v in terms.values())
        ok = torch.isfinite(total).float().reshape(1)
        all_reduce(ok, op='min')  # no-op outside torch.distributed
        if bool(ok.item()):
            self.in_row = 0
            return True
        self.in_row += 1
        self.total += 1
        values = {k: float(v.detach()) for k, v in terms.items()}
        if self.in_row >= self.max_steps:
            raise NonFiniteLossError(
                f'{self.in_row} QAT steps in a row had a non-finite loss (last, on this '
                f'rank: {values}); lower the learning rate or the loss weights, or check '
                'the teacher checkpoint and the synthetic data')
        print_log(f'non-finite QAT loss (on this or another rank; here: {values}): step '
                  f'skipped ({self.in_row} in a row, {self.total} in all)',
                  logger='current', level=30)
        return False
