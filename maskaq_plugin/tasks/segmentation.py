"""Segmentation (mmseg): random label layouts as targets, pixel-wise KL of the decode head."""
from typing import Any

import numpy as np
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

    def pack(self, image, target, meta, ignore_index=255):
        from mmseg.datasets.transforms import PackSegInputs
        h, w = meta['img_shape']
        seg = target.numpy() if target is not None else np.full((h, w), ignore_index,
                                                                 dtype=np.int64)
        results = dict(meta, img=image.permute(1, 2, 0).numpy(), gt_seg_map=seg,
                       reduce_zero_label=False)
        return PackSegInputs(meta_keys=tuple(meta) + ('reduce_zero_label', )).transform(
            results)
