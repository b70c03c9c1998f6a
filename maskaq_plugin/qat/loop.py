"""The Stage 2 loop for classifiers: QAT of the student on a (refreshable) image set."""
import math
import time
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..utils.seeding import derive_words
from ..losses.defaults import MAX_NONFINITE_STEPS
from .distiller import QATDistiller, apply_flat_overrides, distill_losses_for
from .losses import classification_terms, report_terms
from .nonfinite import NonFiniteGuard
from .qat_augment import QATAugment
from .step import RefreshSchedule, build_qat_optimizer, qat_train_step


def run_classification_qat(teacher: nn.Module, student: nn.Module, images: Tensor, *,
                           mean: Sequence[float], std: Sequence[float], epochs: int,
                           batch_size: int, lr: float = 1e-3, seed: int = 0,
                           distill_losses: Optional[dict] = None,
                           loss_kwargs: Optional[dict] = None,
                           max_nonfinite_steps: int = MAX_NONFINITE_STEPS,
                           refresh: Optional[RefreshSchedule] = None,
                           regenerate: Optional[Callable[[int], Tensor]] = None,
                           log: Optional[Callable[[str], None]] = None) -> nn.Module:
    """Train ``student`` to mimic ``teacher`` on ``images`` (docs/method.md, "Stage 2").

    Each epoch shuffles the set, augments every batch with :class:`QATAugment` and takes
    one SGD step (Nesterov 0.9, cosine to 1 % of ``lr`` over the run) on the
    :class:`QATDistiller` of ``distill_losses`` (:func:`classification_terms`). A step with
    a non-finite loss is skipped, ``max_nonfinite_steps`` in a row raise
    :class:`~maskaq_plugin.qat.NonFiniteLossError` (:class:`NonFiniteGuard`). Before
    every epoch of ``refresh``, the set is replaced by ``regenerate(epoch)`` (Stage 1
    against the current student).

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
        distill_losses (dict, optional): The Stage 2 loss config. Defaults to None:
            MaskAQ's (``distill_losses_for('cls')``).
        loss_kwargs (dict, optional): Flat overrides of it (``mssim_weight``,
            ``w_high``, ... of :func:`~maskaq_plugin.qat.classification_qat_loss`).
            Defaults to None.
        max_nonfinite_steps (int): Non-finite steps in a row that stop the run.
            Defaults to 10.
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
    distiller = QATDistiller(apply_flat_overrides(
        distill_losses_for('cls') if distill_losses is None else distill_losses,
        loss_kwargs, name='loss_kwargs'))
    guard = NonFiniteGuard(max_nonfinite_steps)
    keys = derive_words(seed, 10**6, num_words=2)
    gen_cpu = torch.Generator().manual_seed(int(keys[0]))
    gen_dev = gen_cpu if device.type == 'cpu' else \
        torch.Generator(device).manual_seed(int(keys[1]))
    for epoch in range(epochs):
        if refresh is not None and epoch in refresh:
            images = regenerate(epoch)
        student.eval()  # see the docstring: no dropout / stochastic depth, frozen norm stats
        start, sums, skipped = time.time(), {}, 0
        for idx in torch.randperm(num, generator=gen_cpu).split(batch_size):
            x = augment(images[idx].to(device), gen_dev)
            with torch.enable_grad():  # also when called under torch.no_grad()
                terms = qat_train_step(
                    lambda: report_terms(distiller, classification_terms(
                        distiller, teacher, student, x, gen_dev)),
                    optimizer, scheduler, guard)
            skipped += not terms
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
        if log is not None:
            log(f'QAT epoch {epoch + 1}/{epochs} ({time.time() - start:.1f}s) ' +
                ', '.join(f'{k}={v / num:.4g}' for k, v in sums.items()) +
                (f', {skipped} non-finite steps skipped' if skipped else ''))
    return student
