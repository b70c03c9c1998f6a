"""The Stage 1 objective of one iteration: the loss terms of docs/method.md from recorded attention.

Runs the teacher F once (through the task prior, ``L_sem``) while recording its raw
attention scores, then computes the active terms on them: ``L_head`` (inter-head SSIM;
mean over all recorded layers, single-head layers contributing 0) and ``L_ent``
(patch-similarity entropy) per layer, ``L_tv`` on the un-augmented images,
and, with a student Q, the informative-region mask and ``L_mad`` per group of equally
shaped layers (hierarchical backbones, *ours*), averaged over groups.

Axes (spatial-reduction attention, ``Nk < N``): ``L_head`` maps each query row over the
keys and averages over queries; ``L_ent`` compares query rows over the key axis; the
mask and ``L_mad`` reduce to one value per key (see :mod:`maskaq_plugin.losses.functional`).
"""
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..attention import AttentionRecorder, group_records
from ..losses.functional import (check_mask_mode, informative_region_mask,
                                 inter_head_ssim_loss, masked_attention_difference,
                                 patch_similarity_entropy, total_variation)
from .priors.base import TaskPrior

MASK_RATIO = (0.5, 0.1)  # ρ_t, linear over the iterations
MASK_DROP = 0.3


def key_grid(record) -> Tuple[int, int]:
    """``(h, w)`` of a record's patch keys: a square when possible, else one row.

    ``L_head``'s SSIM is global over the map, so the layout only has to hold all keys.
    """
    num_keys = record.scores.shape[-1] - int(record.has_cls_token)
    side = math.isqrt(num_keys)
    return (side, side) if side * side == num_keys else (1, num_keys)


class SynthesisObjective:
    """Unweighted Stage 1 loss terms of one iteration.

    Args:
        teacher (nn.Module): F, run by ``prior.loss``.
        prior (TaskPrior): Gives ``L_sem``.
        terms (Sequence[str]): Active terms among ``head, sem, tv, ent, mad``.
        teacher_attn_root (nn.Module): Module of F whose attention is recorded.
        student (nn.Module, optional): Q (needed for ``mad``).
        student_forward (Callable, optional): Runs Q on the augmented batch.
        mask_mode (str): ``'informative'`` or ``'random'`` mask for ``L_mad`` (see
            :func:`~maskaq_plugin.losses.functional.informative_region_mask`).
            Defaults to ``'informative'``.
    """

    def __init__(self, teacher: nn.Module, prior: TaskPrior, terms: Sequence[str], *,
                 teacher_attn_root: nn.Module, student: Optional[nn.Module] = None,
                 student_forward: Optional[Callable[[Tensor], Any]] = None,
                 mask_mode: str = 'informative'):
        if 'mad' in terms and student is None:
            raise ValueError("the 'mad' term needs a student")
        check_mask_mode(mask_mode)
        self.mask_mode = mask_mode
        self.teacher, self.prior, self.terms = teacher, prior, tuple(terms)
        self.teacher_attn_root, self.student = teacher_attn_root, student
        self.student_forward = student_forward or student

    def __call__(self, x: Tensor, x_aug: Tensor, targets: Any, *, mask_ratio: float,
                 generator: torch.Generator) -> Tuple[Dict[str, Tensor], Optional[Tensor]]:
        """Terms on ``x`` (B, C, H, W) and its augmentation ``x_aug``.

        Returns:
            tuple: ``{term: scalar Tensor}`` and the mask of the first group of layers
            (``(B', P)``, None without ``mad``).
        """
        terms = {}
        with AttentionRecorder(self.teacher_attn_root) as rec_f:
            sem = self.prior.loss(self.teacher, x_aug, targets)
        if 'sem' in self.terms:
            terms['sem'] = sem
        if 'tv' in self.terms:
            terms['tv'] = total_variation(x)  # un-augmented images
        records_f = rec_f.records
        groups = group_records(records_f)
        if 'head' in self.terms and records_f:
            # Mean over ALL recorded layers (groups weighted by their layer count), as the
            # authors average per-layer means: a single-head layer (first stage of
            # PVTv2-b0, MiT-b0, the digit Swin) gives 0 and still counts in the divisor.
            terms['head'] = sum(len(g) * inter_head_ssim_loss(
                [r.scores for r in g], has_cls_token=g[0].has_cls_token,
                grid=key_grid(g[0])) for g in groups) / len(records_f)
        if 'ent' in self.terms:
            terms['ent'] = sum(len(g) * patch_similarity_entropy(
                [r.scores for r in g], has_cls_token=g[0].has_cls_token,
                generator=generator) for g in groups) / len(records_f)
        mask = None
        if 'mad' in self.terms:
            terms['mad'], mask = self._mad(x_aug, records_f, groups, mask_ratio, generator)
        return terms, mask

    def _mad(self, x_aug, records_f, groups, ratio, generator):
        """L_mad and the mask, per group of equally shaped layers, averaged over groups."""
        with AttentionRecorder(self.student) as rec_q:
            self.student_forward(x_aug)
        records_q = rec_q.records
        if len(records_q) != len(records_f):
            raise RuntimeError(f'the student recorded {len(records_q)} attention layers but '
                               f'the teacher {len(records_f)}; pass the matching '
                               'teacher_attn_root / student')
        index = {id(r): i for i, r in enumerate(records_f)}
        mads, first_mask = [], None
        for g in groups:
            has_cls = g[0].has_cls_token
            scores_f = [r.scores for r in g]
            mask = informative_region_mask(scores_f, ratio=ratio, has_cls_token=has_cls,
                                           drop=MASK_DROP, generator=generator,
                                           mask_mode=self.mask_mode)
            scores_q = [records_q[index[id(r)]].scores for r in g]
            mads.append(masked_attention_difference(scores_f, scores_q, mask,
                                                    has_cls_token=has_cls))
            first_mask = mask if first_mask is None else first_mask
        return torch.stack(mads).mean(), first_mask
