"""Segmentation prior: the segmentor's own loss on a random label layout (``L_sem``).

docs/method.md, "Dense tasks" *(ours)*: each synthetic image gets a random coarse layout of a
few classes, upsampled (nearest) to full size; ``L_sem`` is the sum of every loss term of
``segmentor.loss(x, data_samples)`` (decode head and auxiliary heads).
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import TaskPrior
from .detection import sum_loss_terms


class SegmentationPrior(TaskPrior):
    """``L_sem`` for mmseg segmentors: the segmentor's loss on random label layouts.

    Layout of one image, drawn on a ``coarse`` grid (default ``H/8 × W/8``):

    1. ``k ~ U{2, max_classes}`` distinct classes form *blobs*: the argmax over ``k``
       channels of ``N(0, 1)`` noise drawn on a 4×4 grid and bilinearly upsampled to the
       coarse grid (smooth, irregular regions);
    2. ``r ~ U{0, max_rects}`` axis-aligned rectangles of random classes are pasted on
       top (sides 1/8-1/2 of the grid);
    3. the coarse map is upsampled to ``(H, W)`` by nearest neighbour.

    ``ignore_index`` never appears in a layout; it is kept for the segmentor's padding.

    Args:
        num_classes (int): Number of classes of the segmentor's decode head.
        img_shape (Sequence[int]): ``(H, W)`` of the synthetic images.
        ignore_index (int): Label ignored by the loss (padding). Defaults to 255.
        max_classes (int): Most blob classes per image. Defaults to 4.
        max_rects (int): Most rectangles per image. Defaults to 3.
        coarse_stride (int): Pixels per coarse-grid cell. Defaults to 8.

    Examples:
        >>> import torch
        >>> prior = SegmentationPrior(num_classes=4, img_shape=(64, 64))
        >>> s = prior.sample(2, torch.Generator().manual_seed(0))
        >>> tuple(s[0].gt_sem_seg.data.shape), int(s[0].gt_sem_seg.data.max()) < 4
        ((1, 64, 64), True)
    """

    def __init__(self, num_classes: int, img_shape: Sequence[int], ignore_index: int = 255,
                 max_classes: int = 4, max_rects: int = 3, coarse_stride: int = 8):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f'num_classes must be an int >= 2, got {num_classes!r}')
        if len(img_shape) != 2 or min(img_shape) < coarse_stride:
            raise ValueError(f'img_shape must be (H, W) with H, W >= coarse_stride='
                             f'{coarse_stride}, got {img_shape!r}')
        if 0 <= ignore_index < num_classes:
            raise ValueError(f'ignore_index={ignore_index} is a valid class of the '
                             f'{num_classes} classes; use 255 or another unused label')
        if max_classes < 2 or max_rects < 0:
            raise ValueError(f'need max_classes >= 2 and max_rects >= 0, got {max_classes} '
                             f'and {max_rects}')
        self.num_classes = num_classes
        self.img_shape = (int(img_shape[0]), int(img_shape[1]))
        self.ignore_index = ignore_index
        self.max_classes = min(max_classes, num_classes)
        self.max_rects = max_rects
        self.coarse_stride = coarse_stride

    @classmethod
    def from_segmentor(cls, segmentor: nn.Module, img_shape: Sequence[int],
                       **kwargs) -> 'SegmentationPrior':
        """Prior matching ``segmentor``: classes and ignore index of its decode head."""
        head = getattr(segmentor, 'decode_head', None)
        if not isinstance(getattr(head, 'num_classes', None), int):
            raise ValueError(f'{type(segmentor).__name__} has no decode_head.num_classes; '
                             'build SegmentationPrior(num_classes=...) directly')
        kwargs.setdefault('ignore_index', getattr(head, 'ignore_index', 255))
        return cls(head.num_classes, img_shape, **kwargs)

    def layout(self, generator: torch.Generator) -> torch.Tensor:
        """One random label map ``(H, W)`` int64."""
        h, w = self.img_shape
        gh, gw = max(1, h // self.coarse_stride), max(1, w // self.coarse_stride)
        k = int(torch.randint(2, self.max_classes + 1, (1, ), generator=generator))
        classes = torch.randperm(self.num_classes, generator=generator)[:k]
        noise = torch.randn(1, k, 4, 4, generator=generator)
        blobs = F.interpolate(noise, size=(gh, gw), mode='bilinear', align_corners=False)
        coarse = classes[blobs[0].argmax(dim=0)]  # (gh, gw)
        for _ in range(int(torch.randint(0, self.max_rects + 1, (1, ), generator=generator))):
            rh = int(torch.randint(max(1, gh // 8), max(2, gh // 2) + 1, (1, ),
                                   generator=generator))
            rw = int(torch.randint(max(1, gw // 8), max(2, gw // 2) + 1, (1, ),
                                   generator=generator))
            y = int(torch.randint(0, max(1, gh - rh + 1), (1, ), generator=generator))
            x = int(torch.randint(0, max(1, gw - rw + 1), (1, ), generator=generator))
            coarse[y:y + rh, x:x + rw] = torch.randint(self.num_classes, (1, ),
                                                       generator=generator)
        full = F.interpolate(coarse[None, None].float(), size=(h, w), mode='nearest')
        return full[0, 0].long()

    def sample(self, batch_size: int, generator: torch.Generator) -> List:
        """Random layouts: a list of ``SegDataSample`` (CPU), ``gt_sem_seg`` (1, H, W).

        Metainfo: ``img_shape``, ``ori_shape``, ``pad_shape`` (all ``(H, W)``),
        ``padding_size`` ``[0, 0, 0, 0]`` and ``reduce_zero_label=False``.
        """
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        gen = generator if generator.device.type == 'cpu' else torch.Generator().manual_seed(
            int(torch.randint(2**31, (1, ), generator=generator, device=generator.device)))
        samples = []
        for _ in range(batch_size):
            sample = SegDataSample(metainfo=dict(
                img_shape=self.img_shape, ori_shape=self.img_shape, pad_shape=self.img_shape,
                padding_size=[0, 0, 0, 0], reduce_zero_label=False))
            sample.gt_sem_seg = PixelData(data=self.layout(gen)[None])
            samples.append(sample)
        return samples

    def loss(self, model: nn.Module, x: torch.Tensor, targets: List) -> torch.Tensor:
        """Sum of every ``loss*`` term of ``model.loss(x, targets)``; runs ``model`` once.

        Args:
            model (nn.Module): The full-precision mmseg segmentor.
            x (Tensor): ``(B, C, H, W)`` images in the segmentor's normalised input space.
            targets (list[SegDataSample]): From :meth:`sample`.
        """
        if tuple(x.shape[-2:]) != self.img_shape:
            raise ValueError(f'SegmentationPrior(img_shape={self.img_shape}) got images of '
                             f'shape {tuple(x.shape)}; build the prior with the synthesis '
                             'input size')
        if targets[0].gt_sem_seg.data.device != x.device:
            targets = [t.to(x.device) for t in targets]
        return sum_loss_terms(model.loss(x, targets))
