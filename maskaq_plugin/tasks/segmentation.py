"""Segmentation (mmseg): random label layouts as targets, pixel-wise KL of the decode head."""
from typing import Any

import torch
from torch import nn

from .base import Task, as_list


class SegmentationTask(Task):
    """mmseg segmentors: random layouts, :class:`~maskaq_plugin.losses.PixelKLLoss` on
    the decode-head logits ``(B, C, h, w)`` (auxiliary heads are not distilled)."""
    name = 'seg'

    def prior(self, model, img_shape):
        from ..synthesis.priors import SegmentationPrior
        return SegmentationPrior.from_segmentor(model, img_shape)

    def distill(self, loss, teacher, student, feats_fp, feats_q, data_samples):
        if isinstance(student.decode_head, nn.ModuleList):
            raise NotImplementedError('cascade decode heads are not distilled; set the task '
                                      'loss_weight to 0')
        with torch.no_grad():
            logits_fp = teacher.decode_head(as_list(feats_fp))
        return loss(logits_fp, student.decode_head(as_list(feats_q)))

    def plain_targets(self, targets):
        return [t.gt_sem_seg.data[0].detach().cpu().to(torch.uint8 if int(
            t.gt_sem_seg.data.max()) < 256 else torch.int32) for t in targets]

    def flip_target(self, target: Any, width: int) -> Any:
        return None if target is None else target.flip(-1)

    def data_sample(self, meta: dict, target: Any, ignore_index: int = 255):
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=dict(meta, reduce_zero_label=False))
        h, w = meta['img_shape']
        seg = target.long() if target is not None else torch.full(
            (h, w), ignore_index, dtype=torch.long)
        sample.gt_sem_seg = PixelData(data=seg[None])
        return sample
