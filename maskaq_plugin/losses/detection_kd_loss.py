"""Task-output distillation of a detector (docs/method.md, "Dense tasks", *ours*).

Teacher F and student Q share everything after the backbone (neck and heads stay in
full precision); :class:`DetectionKDLoss` gets both detectors and their neck outputs:

* dense detection heads (RetinaNet, FCOS, ATSS, ...): per level, KL on the
  classification logits (binary KL per anchor and class for sigmoid heads, KL over the
  classes per anchor for softmax heads) plus L1 between every other output map (box
  regression, centerness), summed over levels and averaged;
* two-stage detectors (Faster / Mask R-CNN): the RPN as a dense head (binary KL on
  objectness, L1 on deltas) plus the RoI head run on the *teacher's* proposals: KL over
  the classes of ``cls_score``, L1 on ``bbox_pred`` and binary KL on the mask logits.

Segmentation (:class:`~maskaq_plugin.losses.PixelKLLoss` on the decode-head logits) and
classification (:class:`~maskaq_plugin.losses.KDLoss` on the logits) take plain tensors;
:mod:`maskaq_plugin.tasks` runs the heads for each task.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from ._checks import set_loss_args
from .defaults import DENSE_KD_TEMPERATURE
from .functional import pixel_kl_loss


def binary_kl(logits_fp: Tensor, logits_q: Tensor,
              temperature: float = DENSE_KD_TEMPERATURE) -> Tensor:
    """Mean over elements of ``KL(σ(z_F/T) ‖ σ(z_Q/T))`` (independent binary outputs).

    A sigmoid output is a two-class softmax over ``(0, z)``, so this is
    :func:`pixel_kl_loss` on the stacked logits.
    """
    zeros = torch.zeros_like(logits_q)
    return pixel_kl_loss(torch.stack([zeros, logits_fp], dim=1),
                         torch.stack([zeros, logits_q], dim=1), temperature)


def _levels(x) -> List[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)


def _mean(terms: List[Tensor], like: Tensor) -> Tensor:
    terms = [t for t in terms if t is not None]
    return torch.stack(terms).mean() if terms else like.new_zeros(())


def _cls_kl(head: nn.Module, z_fp: Tensor, z_q: Tensor, temperature: float) -> Tensor:
    """KL of one classification map ``(B, A·C, H, W)`` of a dense head."""
    if z_q.numel() == 0:
        return None
    if getattr(head, 'use_sigmoid_cls', True):
        return binary_kl(z_fp, z_q, temperature)
    c = head.cls_out_channels
    b, _, h, w = z_q.shape
    to_cls = lambda z: z.reshape(b, -1, c, h, w).transpose(1, 2)  # (B, C, A, H, W)
    return pixel_kl_loss(to_cls(z_fp), to_cls(z_q), temperature)


def _dense_terms(head_q: nn.Module, out_fp: tuple, out_q: tuple,
                 temperature: float) -> List[Tensor]:
    if not (isinstance(out_q, tuple) and len(out_q) >= 2
            and isinstance(out_q[0], (list, tuple))):
        raise NotImplementedError(
            f'{type(head_q).__name__} does not return (cls_scores, bbox_preds, ...) per '
            'level; its task distillation is not implemented: set the task loss_weight to 0 '
            'to distil backbone features and attention only')
    terms = [_cls_kl(head_q, z_fp, z_q, temperature) for z_fp, z_q in zip(out_fp[0], out_q[0])]
    for maps_fp, maps_q in zip(out_fp[1:], out_q[1:]):
        if maps_q is None:
            continue
        for m_fp, m_q in zip(_levels(maps_fp), _levels(maps_q)):
            if m_q is not None and m_q.numel():
                terms.append(F.l1_loss(m_q, m_fp))
    return terms


def dense_head_kd(head_fp: nn.Module, head_q: nn.Module, feats_fp: Sequence[Tensor],
                  feats_q: Sequence[Tensor],
                  temperature: float = DENSE_KD_TEMPERATURE) -> Tensor:
    """KD of a dense (anchor / point based) head: cls KL + L1 on the other outputs."""
    with torch.no_grad():
        out_fp = head_fp(tuple(feats_fp))
    terms = _dense_terms(head_q, out_fp, head_q(tuple(feats_q)), temperature)
    return _mean(terms, feats_q[0])


def two_stage_kd(det_fp: nn.Module, det_q: nn.Module, feats_fp: Sequence[Tensor],
                 feats_q: Sequence[Tensor], data_samples: list,
                 temperature: float = DENSE_KD_TEMPERATURE) -> Tensor:
    """KD of a two-stage detector: RPN as a dense head + RoI head on teacher proposals."""
    with torch.no_grad():
        rpn_fp = det_fp.rpn_head(tuple(feats_fp))
        metas = [s.metainfo for s in data_samples]
        proposals = det_fp.rpn_head.predict_by_feat(*rpn_fp, batch_img_metas=metas,
                                                    rescale=False)
        roi_fp = det_fp.roi_head.forward(tuple(feats_fp), proposals)
    rpn = _mean(_dense_terms(det_q.rpn_head, rpn_fp, det_q.rpn_head(tuple(feats_q)),
                             temperature), feats_q[0])
    roi_q = det_q.roi_head.forward(tuple(feats_q), proposals)
    terms = []
    for i, (o_fp, o_q) in enumerate(zip(roi_fp, roi_q)):
        if o_q is None or o_q.numel() == 0:
            continue
        if i == 0:  # cls_score (R, C + 1): softmax over classes
            terms.append(pixel_kl_loss(o_fp, o_q, temperature))
        elif i == 1:  # bbox_pred (R, 4·C)
            terms.append(F.l1_loss(o_q, o_fp))
        else:  # mask logits (R, C, h, w): independent sigmoids
            terms.append(binary_kl(o_fp, o_q, temperature))
    return rpn + _mean(terms, feats_q[0])


def detection_kd(det_fp: nn.Module, det_q: nn.Module, feats_fp: Sequence[Tensor],
                 feats_q: Sequence[Tensor], data_samples: list,
                 temperature: float = DENSE_KD_TEMPERATURE) -> Tensor:
    """Task KD of an mmdet detector (two-stage or dense head) on its neck outputs."""
    if getattr(det_q, 'with_rpn', False) and getattr(det_q, 'with_roi_head', False):
        return two_stage_kd(det_fp, det_q, feats_fp, feats_q, data_samples, temperature)
    if getattr(det_q, 'bbox_head', None) is not None:
        return dense_head_kd(det_fp.bbox_head, det_q.bbox_head, feats_fp, feats_q,
                             temperature)
    raise NotImplementedError(f'no task distillation for {type(det_q).__name__}; set '
                              'the task loss_weight to 0 to distil backbone features and attention '
                              'only')


@MODELS.register_module()
class DetectionKDLoss(nn.Module):
    """``loss_weight · L_task`` of an mmdet detector; see :func:`detection_kd`.

    Args:
        temperature (float): softmax temperature of the KL terms. Defaults to 1.0.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self, temperature: float = DENSE_KD_TEMPERATURE,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        set_loss_args(self, loss_weight, temperature)

    def forward(self, det_fp: nn.Module, det_q: nn.Module, feats_fp: Sequence[Tensor],
                feats_q: Sequence[Tensor], data_samples: list) -> Tensor:
        """Compute the weighted loss.

        Args:
            det_fp (nn.Module): teacher detector (its heads run without grad).
            det_q (nn.Module): student detector.
            feats_fp (Sequence[Tensor]): teacher neck outputs ``(B, C, H, W)`` per level.
            feats_q (Sequence[Tensor]): student neck outputs, same shapes.
            data_samples (list): the batch's ``DetDataSample`` (image metas).

        Returns:
            Tensor: scalar loss.
        """
        return self.loss_weight * detection_kd(det_fp, det_q, feats_fp, feats_q,
                                               data_samples, self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'
