"""Per-iteration augmentation of Stage 1 (docs/method.md, Stage 1, step 1).

Each synthesis iteration sees a randomly transformed copy of the images ``x`` (in the
model's normalised input space, ``(B, C, H, W)``):

1. roll by a random offset in ``[-J, J]`` pixels on each axis (one offset per axis for
   the whole batch, as in the authors' code), ``J = 8`` in the first half of the
   iterations and ``16`` after;
2. add a per-image, per-channel constant drawn from ``N(0, σ_t²)``, ``σ_t`` falling
   linearly from 0.5 at the first iteration to 0 at the last;
3. per-image, per-channel affine colour jitter ``(x − m) / s`` with ``m ~ U(−1, 1)`` and
   ``log s ~ U(−1, 1)``.

All of it is vectorised over the batch and differentiable with respect to ``x``.
"""
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

SIGMA_START = 0.5
JITTER_SMALL, JITTER_LARGE = 8, 16


@dataclass
class AugmentParams:
    """The random draws of one iteration (for tests and debugging)."""
    shift: Tuple[int, int]  # roll offsets (rows, columns)
    offset: Tensor  # (B, C, 1, 1) additive constant
    m: Tensor  # (B, C, 1, 1) colour-jitter centre
    s: Tensor  # (B, C, 1, 1) colour-jitter scale


def schedule(it: int, iters: int) -> Tuple[int, float]:
    """``(J, σ_t)`` of iteration ``it`` (0-based) of ``iters``."""
    if not 0 <= it < iters:
        raise ValueError(f'iteration {it} is outside [0, {iters})')
    jitter = JITTER_SMALL if it < iters // 2 else JITTER_LARGE
    sigma = SIGMA_START * (1 - it / max(iters - 1, 1))
    return jitter, sigma


def synthesis_augment(x: Tensor, it: int, iters: int, *, generator: torch.Generator,
                      shift_generator: torch.Generator = None,
                      return_params: bool = False):
    """Augment the synthetic batch ``x`` (B, C, H, W) for iteration ``it`` of ``iters``.

    Args:
        x (Tensor): Images in normalised space; gradients flow through the result.
        it (int): Current iteration, 0-based.
        iters (int): Total number of iterations T.
        generator (torch.Generator): Source of the per-image draws, on ``x``'s device.
        shift_generator (torch.Generator, optional): CPU source of the roll offsets
            (avoids a device sync). Defaults to ``generator`` when that is on the CPU.
        return_params (bool): Also return the :class:`AugmentParams`. Defaults to False.

    Returns:
        Tensor | tuple[Tensor, AugmentParams]: The augmented batch, same shape.
    """
    jitter, sigma = schedule(it, iters)
    if shift_generator is None:
        if generator.device.type != 'cpu':
            raise ValueError('pass a CPU shift_generator when generator is on '
                             f'{generator.device}')
        shift_generator = generator
    dy, dx = torch.randint(-jitter, jitter + 1, (2, ), generator=shift_generator).tolist()
    out = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    b, c = x.shape[:2]
    kw = dict(generator=generator, device=generator.device, dtype=x.dtype)
    offset = (torch.randn(b, c, 1, 1, **kw) * sigma).to(x.device)
    m = (torch.rand(b, c, 1, 1, **kw) * 2 - 1).to(x.device)
    s = (torch.rand(b, c, 1, 1, **kw) * 2 - 1).exp().to(x.device)
    out = (out + offset - m) / s
    if return_params:
        return out, AugmentParams((dy, dx), offset, m, s)
    return out
