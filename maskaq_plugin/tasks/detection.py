"""Detection (mmdet): random boxes as targets, KD of the detector's heads."""
from typing import Any

import numpy as np
import torch

from .base import Task


class DetectionTask(Task):
    """mmdet detectors: random boxes, :class:`~maskaq_plugin.losses.DetectionKDLoss`."""
    name = 'det'

    def prior(self, model, img_shape):
        from ..synthesis.priors import DetectionPrior
        return DetectionPrior.from_detector(model, img_shape)

    def distill(self, loss, teacher, student, feats_fp, feats_q, data_samples):
        return loss(teacher, student, feats_fp, feats_q, data_samples)

    def plain_targets(self, targets):
        return [dict(bboxes=t.gt_instances.bboxes.detach().cpu().float(),
                     labels=t.gt_instances.labels.detach().cpu().long()) for t in targets]

    def flip_target(self, target: Any, width: int) -> Any:
        if target is None:
            return None
        from mmdet.structures.bbox import bbox_flip
        return dict(target, bboxes=bbox_flip(target['bboxes'], (1, width), 'horizontal'))

    def pack(self, image, target, meta, ignore_index=255):
        from mmdet.datasets.transforms import PackDetInputs
        target = target or dict(bboxes=torch.zeros(0, 4), labels=torch.zeros(0).long())
        results = dict(meta, img=image.permute(1, 2, 0).numpy(), scale_factor=(1.0, 1.0),
                       gt_bboxes=target['bboxes'].float().numpy(),
                       gt_bboxes_labels=target['labels'].long().numpy(),
                       gt_ignore_flags=np.zeros(len(target['labels']), dtype=bool))
        return PackDetInputs(meta_keys=tuple(meta) + ('scale_factor', )).transform(results)
