"""The Stage 2 loss of a plain classifier (``quantize_data_free``).

``L_Q = T²·KL(softmax(z_F/T) ‖ softmax(z_Q/T)) + λ·L_mssim`` with T = 5, λ = 10
(docs/method.md, "Stage 2"), computed by the same registry-built
:class:`~maskaq_plugin.qat.QATDistiller` as the OpenMMLab wrapper; MimiQ uses the
unmasked SSIM (``w_high = w_low = 1``) and the PSAQ-ViT / noise baselines KD only
(``mssim_weight=0``).
"""
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ..attention import AttentionRecorder
from ..losses.defaults import KD_TEMPERATURE, MSSIM_WEIGHT, TOP_RATIO, W_HIGH, W_LOW
from .distiller import QATDistiller, distill_losses_for

# The API's names of the terms: the task term of a classifier is the logit KD.
REPORT_NAMES = dict(task='kd')


def classification_terms(distiller: QATDistiller, teacher: nn.Module, student: nn.Module,
                         x: Tensor, generator: Optional[torch.Generator] = None
                         ) -> Dict[str, Tensor]:
    """The weighted Stage 2 terms of a classifier on the batch ``x`` (B, C, H, W).

    Runs the teacher (no grad, attention recorded detached) and the student once; the
    attention is recorded only when ``distiller`` has an ``mssim`` term. The ``task``
    term is the distiller's task loss on the two models' logits.

    Args:
        distiller (QATDistiller): The Stage 2 loss.
        teacher (nn.Module): Full-precision classifier F (explicit attention).
        student (nn.Module): Fake-quantized copy Q.
        x (Tensor): Input batch (normalised).
        generator (torch.Generator, optional): Source of the random mask (on ``x``'s
            device). Defaults to None (global RNG).

    Returns:
        dict[str, Tensor]: Term name -> weighted scalar, as :class:`QATDistiller`.
    """
    if not distiller.records_attention:
        with torch.no_grad():
            logits_fp = teacher(x)
        logits_q = student(x)
        return distiller(task=lambda loss: loss(logits_fp, logits_q))
    with torch.no_grad(), AttentionRecorder(teacher, detach=True) as rec_fp:
        logits_fp = teacher(x)
    with AttentionRecorder(student) as rec_q:
        logits_q = student(x)
    return distiller(task=lambda loss: loss(logits_fp, logits_q),
                     records=(rec_fp.records, rec_q.records), generator=generator)


def report_terms(distiller: QATDistiller, terms: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The API's view of weighted ``terms``: each term without its weight (``task`` named
    ``kd``) and ``loss``, their weighted sum (the tensor to minimise)."""
    out, loss = {}, None
    for name, value in terms.items():
        weight = distiller.losses[name].loss_weight
        out[REPORT_NAMES.get(name, name)] = value if weight == 1 else value / weight
        loss = value if loss is None else loss + value
    out['loss'] = loss
    return out


def classification_qat_loss(teacher: nn.Module, student: nn.Module, x: Tensor, *,
                            temperature: float = KD_TEMPERATURE,
                            mssim_weight: float = MSSIM_WEIGHT,
                            top_ratio: float = TOP_RATIO, w_high: float = W_HIGH,
                            w_low: float = W_LOW, mask_mode: str = 'informative',
                            generator: Optional[torch.Generator] = None
                            ) -> Dict[str, Tensor]:
    """QAT loss of a classifier on the batch ``x`` (B, C, H, W), from flat options.

    Builds the :class:`QATDistiller` of these options (the classification
    ``distill_losses`` of :mod:`maskaq_plugin.losses.defaults`, overridden) and runs
    :func:`classification_terms`.

    Args:
        teacher (nn.Module): Full-precision classifier F (explicit attention).
        student (nn.Module): Fake-quantized copy Q.
        x (Tensor): Input batch (normalised).
        temperature (float): KD temperature T. Defaults to 5.0.
        mssim_weight (float): λ; 0 disables ``L_mssim`` (KD only, no recording).
            Defaults to 10.0.
        top_ratio (float): Fraction of tokens weighted ``w_high``. Defaults to 0.1.
        w_high (float): Weight of the important tokens (1.0: MimiQ, unmasked).
            Defaults to 2.0.
        w_low (float): Weight of the other tokens. Defaults to 1.0.
        mask_mode (str): ``'informative'`` or ``'random'`` (ablation: as many tokens,
            drawn uniformly). Defaults to ``'informative'``.
        generator (torch.Generator, optional): Source of the random mask (on ``x``'s
            device). Defaults to None (global RNG).

    Returns:
        dict[str, Tensor]: ``kd``, ``mssim`` (only when ``mssim_weight > 0``), both
        unweighted, and ``loss``.
    """
    distiller = QATDistiller(distill_losses_for('cls', kd=dict(
        temperature=temperature, mssim=mssim_weight, top_ratio=top_ratio, w_high=w_high,
        w_low=w_low, mask_mode=mask_mode)))
    return report_terms(distiller, classification_terms(distiller, teacher, student, x,
                                                        generator))
