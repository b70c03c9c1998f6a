"""Stage 2 losses assembled from attention records: ``L_mssim`` and the classifier QAT loss.

``L_Q = T²·KL(softmax(z_F/T) ‖ softmax(z_Q/T)) + λ·L_mssim`` with T = 5, λ = 10
(docs/method.md, "Stage 2"); MimiQ uses the unmasked SSIM (``w_high = w_low = 1``) and the
PSAQ-ViT / noise baselines KD only (``mssim_weight=0``).
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..attention import AttentionRecord, AttentionRecorder, group_records
from ..losses.defaults import KD_TEMPERATURE, MSSIM_WEIGHT, TOP_RATIO, W_HIGH, W_LOW
from ..losses.functional import kd_kl_loss, masked_attention_ssim


def mssim_from_records(records_fp: List[AttentionRecord], records_q: List[AttentionRecord],
                       **kwargs) -> Tensor:
    """``L_mssim`` averaged over layers, computed per group of equally shaped layers.

    Args:
        records_fp (list[AttentionRecord]): Teacher records of one forward (detached or not:
            the teacher side is detached inside the loss).
        records_q (list[AttentionRecord]): Student records of the same input, in the same
            forward order.
        **kwargs: ``top_ratio``, ``w_high``, ``w_low``, ``mask_mode``, ``generator`` of
            :func:`~maskaq_plugin.losses.functional.masked_attention_ssim`.

    Returns:
        Tensor: Scalar, the mean over layers of each layer's ``1 - mean(ssim)``.
    """
    if not records_fp or len(records_fp) != len(records_q):
        raise ValueError(f'got {len(records_fp)} teacher and {len(records_q)} student '
                         'attention records; record both models on the same input')
    index = {id(r): i for i, r in enumerate(records_fp)}
    total = 0
    for group in group_records(records_fp):
        ctx_q = [records_q[index[id(r)]].context for r in group]
        total = total + len(group) * masked_attention_ssim(
            [r.context for r in group], ctx_q, has_cls_token=group[0].has_cls_token, **kwargs)
    return total / len(records_fp)


def classification_qat_loss(teacher: nn.Module, student: nn.Module, x: Tensor, *,
                            temperature: float = KD_TEMPERATURE,
                            mssim_weight: float = MSSIM_WEIGHT,
                            top_ratio: float = TOP_RATIO, w_high: float = W_HIGH,
                            w_low: float = W_LOW, mask_mode: str = 'informative',
                            generator: Optional[torch.Generator] = None
                            ) -> Dict[str, Tensor]:
    """QAT loss of a classifier on the batch ``x`` (B, C, H, W).

    Runs the teacher (no grad, attention recorded detached) and the student once.

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
        dict[str, Tensor]: ``kd``, ``mssim`` (only when ``mssim_weight > 0``) and ``loss``.
    """
    if mssim_weight == 0:
        with torch.no_grad():
            logits_fp = teacher(x)
        kd = kd_kl_loss(logits_fp, student(x), temperature)
        return dict(kd=kd, loss=kd)
    with torch.no_grad(), AttentionRecorder(teacher, detach=True) as rec_fp:
        logits_fp = teacher(x)
    with AttentionRecorder(student) as rec_q:
        logits_q = student(x)
    kd = kd_kl_loss(logits_fp, logits_q, temperature)
    mssim = mssim_from_records(rec_fp.records, rec_q.records, top_ratio=top_ratio,
                               w_high=w_high, w_low=w_low, mask_mode=mask_mode,
                               generator=generator)
    return dict(kd=kd, mssim=mssim, loss=kd + mssim_weight * mssim)
