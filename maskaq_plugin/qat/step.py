"""Stage 2 training helpers shared by the API and the OpenMMLab wrapper.

SGD with Nesterov momentum 0.9, cosine decay to 1 % of the learning rate over the run
(docs/method.md, "Stage 2"), and the epochs at which the synthetic set is refreshed.
"""
import math
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from .nonfinite import NonFiniteGuard


class RefreshSchedule:
    """Which epochs regenerate the synthetic set (Stage 1 against the current Q).

    Round 0 is generated before epoch 0; a refresh happens before every epoch that is a
    positive multiple of ``refresh_every`` (paper code: R = 30 of 100 epochs, i.e. before
    epochs 30, 60 and 90).

    Args:
        refresh_every (int | None): R; None or 0 never refreshes.
        epochs (int): Number of QAT epochs.

    Examples:
        >>> RefreshSchedule(30, 100).epochs
        [30, 60, 90]
        >>> 60 in RefreshSchedule(30, 100), 0 in RefreshSchedule(30, 100)
        (True, False)
        >>> RefreshSchedule(None, 100).epochs
        []
    """

    def __init__(self, refresh_every: Optional[int], epochs: int):
        if refresh_every is not None and (not isinstance(refresh_every, int)
                                          or refresh_every < 0):
            raise ValueError(f'refresh_every must be None or an int >= 0, got '
                             f'{refresh_every!r}')
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f'epochs must be a positive int, got {epochs!r}')
        self.refresh_every, self.num_epochs = refresh_every or 0, epochs

    @property
    def epochs(self) -> List[int]:
        """The epochs (0-based) before which the set is regenerated."""
        if not self.refresh_every:
            return []
        return list(range(self.refresh_every, self.num_epochs, self.refresh_every))

    def __contains__(self, epoch: int) -> bool:
        return bool(self.refresh_every) and 0 < epoch < self.num_epochs and \
            epoch % self.refresh_every == 0

    @property
    def num_rounds(self) -> int:
        """Synthesis rounds in the run: round 0 plus the refreshes."""
        return 1 + len(self.epochs)


def build_qat_optimizer(params: Iterable[Tensor], *, lr: float = 1e-3, total_steps: int,
                        momentum: float = 0.9,
                        final_ratio: float = 0.01) -> Tuple[torch.optim.Optimizer,
                                                            torch.optim.lr_scheduler.LRScheduler]:
    """SGD (Nesterov) and a per-step cosine schedule from ``lr`` to ``final_ratio·lr``."""
    if total_steps < 1:
        raise ValueError(f'total_steps must be >= 1, got {total_steps}')
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True)

    def factor(step: int) -> float:
        t = min(step, total_steps) / total_steps
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def qat_train_step(loss_fn: Callable[[], Dict[str, Tensor]], optimizer: torch.optim.Optimizer,
                   scheduler=None, guard: Optional[NonFiniteGuard] = None) -> Dict[str, float]:
    """One optimisation step on ``loss_fn()['loss']``; returns the terms as floats.

    A non-finite loss is handled by ``guard`` (:class:`NonFiniteGuard`, the policy of
    both entry points): the step is skipped (no update, the schedule advances, ``{}`` is
    returned) or, at the guard's limit, :class:`NonFiniteLossError` is raised. Without a
    guard the first non-finite loss raises.
    """
    terms = loss_fn()
    if not (guard or NonFiniteGuard(max_steps=1)).check(dict(loss=terms['loss'])):
        if scheduler is not None:
            with warnings.catch_warnings():  # "scheduler before optimizer": skipped on purpose
                warnings.simplefilter('ignore', UserWarning)
                scheduler.step()
        return {}
    optimizer.zero_grad(set_to_none=True)
    terms['loss'].backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {k: float(v.detach()) for k, v in terms.items()}
