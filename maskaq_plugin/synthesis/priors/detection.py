"""Detection prior: the detector's own training loss on random ground truth (``L_sem``).

docs/method.md, "Dense tasks" *(ours)*: for each synthetic image draw 1-``max_boxes`` boxes
with random classes, sizes and positions inside the image; ``L_sem`` is the sum of every
loss term of ``detector.loss(x, data_samples)``. When the detector predicts masks, each
box carries a filled box-shaped mask, so Mask R-CNN's mask head has a target too.
"""
from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from .base import TaskPrior


def _detector_has_mask(detector: nn.Module) -> bool:
    roi_head = getattr(detector, 'roi_head', None)
    return bool(getattr(roi_head, 'with_mask', False)) or hasattr(detector, 'mask_head')


class DetectionPrior(TaskPrior):
    """``L_sem`` for mmdet detectors: the detector's loss on random boxes.

    Each image gets ``n ~ U{1, max_boxes}`` boxes. A box side is
    ``size_range[0]..size_range[1]`` times the image side (log-uniform), its position is
    uniform with the box inside the image, its class uniform over ``num_classes``.

    Args:
        num_classes (int): Number of object classes of the detector.
        img_shape (Sequence[int]): ``(H, W)`` of the synthetic images.
        max_boxes (int): Most boxes per image. Defaults to 5.
        size_range (tuple[float, float]): Range of a box side as a fraction of the image
            side. Defaults to (0.1, 0.7).
        with_mask (bool): Attach box-filled ``BitmapMasks`` (needed by detectors with a
            mask head, e.g. Mask R-CNN). Defaults to False; :meth:`from_detector` decides
            it from the detector.

    Examples:
        >>> import torch
        >>> prior = DetectionPrior(num_classes=3, img_shape=(64, 64))
        >>> samples = prior.sample(2, torch.Generator().manual_seed(0))
        >>> [1 <= len(s.gt_instances) <= 5 for s in samples]
        [True, True]
        >>> samples[0].metainfo['batch_input_shape']
        (64, 64)
    """

    def __init__(self, num_classes: int, img_shape: Sequence[int], max_boxes: int = 5,
                 size_range=(0.1, 0.7), with_mask: bool = False):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
        if len(img_shape) != 2 or min(img_shape) < 2:
            raise ValueError(f'img_shape must be (H, W) with H, W >= 2, got {img_shape!r}')
        if not isinstance(max_boxes, int) or max_boxes < 1:
            raise ValueError(f'max_boxes must be an int >= 1, got {max_boxes!r}')
        if not 0 < size_range[0] <= size_range[1] <= 1:
            raise ValueError(f'size_range must satisfy 0 < lo <= hi <= 1, got {size_range!r}')
        self.num_classes = num_classes
        self.img_shape = (int(img_shape[0]), int(img_shape[1]))
        self.max_boxes = max_boxes
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.with_mask = bool(with_mask)

    @classmethod
    def from_detector(cls, detector: nn.Module, img_shape: Sequence[int],
                      **kwargs) -> 'DetectionPrior':
        """Prior matching ``detector``: its number of classes and whether it has masks."""
        head = getattr(getattr(detector, 'roi_head', None), 'bbox_head', None)
        head = head[-1] if isinstance(head, nn.ModuleList) else head  # cascade heads
        head = head if head is not None else getattr(detector, 'bbox_head', None)
        num_classes = getattr(head, 'num_classes', None)
        if not isinstance(num_classes, int):
            raise ValueError(f'cannot read the number of classes of {type(detector).__name__}'
                             ' (no roi_head.bbox_head.num_classes or bbox_head.num_classes);'
                             ' build DetectionPrior(num_classes=...) directly')
        kwargs.setdefault('with_mask', _detector_has_mask(detector))
        return cls(num_classes, img_shape, **kwargs)

    def _boxes(self, generator: torch.Generator) -> torch.Tensor:
        h, w = self.img_shape
        n = int(torch.randint(1, self.max_boxes + 1, (1, ), generator=generator))
        lo, hi = np.log(self.size_range[0]), np.log(self.size_range[1])
        frac = (torch.rand(n, 2, generator=generator) * (hi - lo) + lo).exp()  # (n, 2)
        size = (frac * torch.tensor([w, h], dtype=torch.float32)).clamp(min=2.0)
        pos = torch.rand(n, 2, generator=generator)
        x1y1 = pos * (torch.tensor([w, h], dtype=torch.float32) - size)
        return torch.cat([x1y1, x1y1 + size], dim=1)  # (n, 4) xyxy

    def sample(self, batch_size: int, generator: torch.Generator) -> List:
        """Random ground truth: a list of ``DetDataSample`` (on the CPU), one per image.

        ``gt_instances`` holds ``bboxes`` (n, 4) xyxy float, ``labels`` (n,) int64 and,
        with masks, ``masks`` (``BitmapMasks`` of filled boxes). The metainfo is what
        mmdet's data preprocessor and heads read: ``img_shape``, ``ori_shape``,
        ``pad_shape``, ``batch_input_shape`` (all ``(H, W)``) and ``scale_factor``
        ``(1.0, 1.0)``.
        """
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData

        gen = generator if generator.device.type == 'cpu' else torch.Generator().manual_seed(
            int(torch.randint(2**31, (1, ), generator=generator, device=generator.device)))
        h, w = self.img_shape
        samples = []
        for _ in range(batch_size):
            boxes = self._boxes(gen)
            inst = InstanceData(
                bboxes=boxes,
                labels=torch.randint(self.num_classes, (len(boxes), ), generator=gen))
            if self.with_mask:
                masks = np.zeros((len(boxes), h, w), dtype=np.uint8)
                for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
                    masks[i, y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)] = 1
                inst.masks = BitmapMasks(masks, h, w)
            sample = DetDataSample(metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
            sample.gt_instances = inst
            samples.append(sample)
        return samples

    def loss(self, model: nn.Module, x: torch.Tensor, targets: List) -> torch.Tensor:
        """Sum of every ``loss*`` term of ``model.loss(x, targets)``; runs ``model`` once.

        Args:
            model (nn.Module): The full-precision mmdet detector.
            x (Tensor): ``(B, C, H, W)`` images in the detector's normalised input space.
            targets (list[DetDataSample]): From :meth:`sample`.
        """
        if tuple(x.shape[-2:]) != self.img_shape:
            raise ValueError(f'DetectionPrior(img_shape={self.img_shape}) got images of '
                             f'shape {tuple(x.shape)}; build the prior with the synthesis '
                             'input size')
        if _detector_has_mask(model) and 'masks' not in targets[0].gt_instances:
            raise ValueError(f'{type(model).__name__} has a mask head but the targets have '
                             'no masks: build DetectionPrior(..., with_mask=True) or use '
                             'DetectionPrior.from_detector(detector, img_shape)')
        if targets[0].gt_instances.bboxes.device != x.device:
            targets = [t.to(x.device) for t in targets]
        return sum_loss_terms(model.loss(x, targets))


def sum_loss_terms(losses: dict) -> torch.Tensor:
    """Sum of every value whose key contains ``'loss'`` (MMEngine ``parse_losses`` rule).

    A value may be a tensor (its mean is taken) or a list of tensors (their means are
    summed), as in ``mmengine.model.BaseModel.parse_losses``.
    """
    total = []
    for key, value in losses.items():
        if 'loss' not in key:
            continue
        if isinstance(value, torch.Tensor):
            total.append(value.mean())
        elif isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor)
                                                      for v in value):
            total.extend(v.mean() for v in value)
        else:
            raise TypeError(f'loss term {key!r} is a {type(value).__name__}, expected a '
                            'tensor or a list of tensors')
    if not total:
        raise ValueError(f'the model returned no loss term (keys: {sorted(losses)})')
    return torch.stack(total).sum()
