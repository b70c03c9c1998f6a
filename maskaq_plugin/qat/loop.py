"""The Stage 2 loop for classifiers: QAT of the student on a (refreshable) image set."""
import math
import time
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..utils.seeding import derive_words
from .losses import classification_qat_loss
from .qat_augment import QATAugment
from .step import RefreshSchedule, build_qat_optimizer, qat_train_step


def run_classification_qat(teacher: nn.Module, student: nn.Module, images: Tensor, *,
                           mean: Sequence[float], std: Sequence[float], epochs: int,
                           batch_size: int, lr: float = 1e-3, seed: int = 0,
                           loss_kwargs: Optional[dict] = None,
                           refresh: Optional[RefreshSchedule] = None,
                           regenerate: Optional[Callable[[int], Tensor]] = None,
                           log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """Train ``student`` to mimic ``teacher`` on ``images`` (docs/method.md, "Stage 2").

    Each epoch shuffles the set, augments every batch with :class:`QATAugment` and takes
    one SGD step (Nesterov 0.9, cosine to 1 % of ``lr`` over the run) on
    :func:`classification_qat_loss`. Before every epoch of ``refresh``, the set is
    replaced by ``regenerate(epoch)`` (Stage 1 against the current student).

    The student's modules stay in **eval mode** while it trains *(ours)*: the dropout and
    stochastic depth of the FP training recipe would make Q a noisy copy of F that the
    distillation then fits (measured on the digits ViT with ``drop_path_rate=0.1``: the
    KD of a fixed batch varied by ±40 % between forwards), and normalisation statistics
    must not be re-estimated on synthetic images. Gradients and the fake quantizers'
    learnable ranges are unaffected by the mode.

    Args:
        teacher (nn.Module): Frozen full-precision classifier F.
        student (nn.Module): Fake-quantized copy Q, trained in place.
        images (Tensor): ``(N, C, H, W)`` normalised training images (any device).
        mean (Sequence[float]): Normalisation mean (for the augmentations).
        std (Sequence[float]): Normalisation std.
        epochs (int): Passes over the set.
        batch_size (int): Images per step.
        lr (float): SGD learning rate. Defaults to 1e-3.
        seed (int): Seed of shuffling and augmentation. Defaults to 0.
        loss_kwargs (dict, optional): Keyword arguments of
            :func:`classification_qat_loss` (``mssim_weight``, ``w_high``, ...).
        refresh (RefreshSchedule, optional): Epochs that regenerate the set.
        regenerate (Callable, optional): ``regenerate(epoch) -> images``; required
            with a non-empty ``refresh``.
        log (Callable, optional): Receives one line per epoch.

    Returns:
        nn.Module: ``student`` (in eval mode).
    """
    if refresh is not None and refresh.epochs and regenerate is None:
        raise ValueError(f'refresh epochs {refresh.epochs} need a regenerate(epoch) callable')
    device = next(student.parameters()).device
    num = len(images)
    optimizer, scheduler = build_qat_optimizer(
        [p for p in student.parameters() if p.requires_grad], lr=lr,
        total_steps=epochs * math.ceil(num / batch_size))
    augment = QATAugment(mean, std)
    keys = derive_words(seed, 10**6, num_words=2)
    gen_cpu = torch.Generator().manual_seed(int(keys[0]))
    gen_dev = gen_cpu if device.type == 'cpu' else \
        torch.Generator(device).manual_seed(int(keys[1]))
    for epoch in range(epochs):
        if refresh is not None and epoch in refresh:
            images = regenerate(epoch)
        student.eval()  # see the docstring: no dropout / stochastic depth, frozen norm stats
        start, sums = time.time(), {}
        for idx in torch.randperm(num, generator=gen_cpu).split(batch_size):
            x = augment(images[idx].to(device), gen_dev)
            with torch.enable_grad():  # also when called under torch.no_grad()
                terms = qat_train_step(
                    lambda: classification_qat_loss(teacher, student, x, generator=gen_dev,
                                                    **(loss_kwargs or {})),
                    optimizer, scheduler)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
        if log is not None:
            log(f'QAT epoch {epoch + 1}/{epochs} ({time.time() - start:.1f}s) ' +
                ', '.join(f'{k}={v / num:.4g}' for k, v in sums.items()))
    return student
