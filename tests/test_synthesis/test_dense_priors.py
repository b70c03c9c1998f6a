"""DetectionPrior / SegmentationPrior on tiny real mmdet and mmseg models."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.registry import MODELS

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)), 'test_models'))
import tiny_archs  # noqa: E402

from maskaq_plugin.synthesis.priors import DetectionPrior, SegmentationPrior  # noqa: E402

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')


def _build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()


@pytest.fixture(scope='module')
def mask_rcnn():
    return _build(tiny_archs.mask_rcnn_swin())


@pytest.fixture(scope='module')
def retinanet():
    return _build(tiny_archs.retinanet_pvtv2())


@pytest.fixture(scope='module')
def upernet():
    return _build(tiny_archs.upernet_swin())


def test_docstring_examples():
    import doctest

    from maskaq_plugin.synthesis.priors import detection, segmentation
    for module in (detection, segmentation):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def test_detection_sample_geometry_and_determinism():
    prior = DetectionPrior(num_classes=3, img_shape=(48, 64), max_boxes=5, with_mask=True)
    a = prior.sample(16, torch.Generator().manual_seed(7))
    b = prior.sample(16, torch.Generator().manual_seed(7))
    counts = set()
    for s, t in zip(a, b):
        boxes, labels = s.gt_instances.bboxes, s.gt_instances.labels
        assert torch.equal(boxes, t.gt_instances.bboxes)
        assert torch.equal(labels, t.gt_instances.labels)
        counts.add(len(boxes))
        assert 1 <= len(boxes) <= 5
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((labels >= 0) & (labels < 3)).all()
        masks = s.gt_instances.masks
        assert masks.masks.shape == (len(boxes), 48, 64)
        x1, y1, x2, y2 = boxes[0].round().long().tolist()
        assert masks.masks[0, y1:y2, x1:x2].all() and masks.masks[0].sum() == (y2 - y1) * (x2 - x1)
        for key in ('img_shape', 'ori_shape', 'pad_shape', 'batch_input_shape'):
            assert s.metainfo[key] == (48, 64)
        assert s.metainfo['scale_factor'] == (1.0, 1.0)
    assert len(counts) > 1  # the number of boxes varies
    c = prior.sample(16, torch.Generator().manual_seed(8))
    assert not torch.equal(a[0].gt_instances.bboxes, c[0].gt_instances.bboxes)


def test_detection_prior_from_detector(mask_rcnn, retinanet):
    p = DetectionPrior.from_detector(mask_rcnn, (64, 64))
    assert (p.num_classes, p.with_mask) == (tiny_archs.DET_CLASSES, True)
    p = DetectionPrior.from_detector(retinanet, (64, 64))
    assert (p.num_classes, p.with_mask) == (tiny_archs.DET_CLASSES, False)


def _seed_global(seed=0):
    """mmdet's proposal samplers draw from the global RNGs."""
    import numpy as np
    torch.manual_seed(seed)
    np.random.seed(seed)


@pytest.mark.parametrize('name', ['mask_rcnn', 'retinanet'])
def test_detection_loss_finite_grad_deterministic(name, request):
    det = request.getfixturevalue(name)
    prior = DetectionPrior.from_detector(det, (64, 64))
    targets = prior.sample(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    _seed_global()
    loss = prior.loss(det, x, targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    _seed_global()
    terms = det.loss(x, targets)
    expected = sum(v.mean() if torch.is_tensor(v) else sum(t.mean() for t in v)
                   for k, v in terms.items() if 'loss' in k)
    torch.testing.assert_close(loss, expected)
    (grad, ) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    if name == 'mask_rcnn':
        assert 'loss_mask' in terms
    _seed_global()
    again = prior.loss(det, x, prior.sample(2, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(loss, again)


def test_detection_prior_needs_masks_for_mask_heads(mask_rcnn):
    prior = DetectionPrior(tiny_archs.DET_CLASSES, (64, 64), with_mask=False)
    with pytest.raises(ValueError, match='with_mask=True'):
        prior.loss(mask_rcnn, torch.randn(1, 3, 64, 64), prior.sample(1, torch.Generator()))
    with pytest.raises(ValueError, match='img_shape'):
        DetectionPrior(3, (64, 64)).loss(mask_rcnn, torch.randn(1, 3, 32, 32), [])


def test_segmentation_layout_and_determinism():
    prior = SegmentationPrior(num_classes=6, img_shape=(64, 48))
    a = prior.sample(8, torch.Generator().manual_seed(3))
    b = prior.sample(8, torch.Generator().manual_seed(3))
    for s, t in zip(a, b):
        seg = s.gt_sem_seg.data
        assert seg.shape == (1, 64, 48) and seg.dtype == torch.long
        assert torch.equal(seg, t.gt_sem_seg.data)
        assert 0 <= int(seg.min()) and int(seg.max()) < 6
        # coarse layout: constant on every 8x8 cell (nearest upsampling)
        cells = seg[0].reshape(8, 8, 6, 8).permute(0, 2, 1, 3).reshape(8, 6, 64)
        assert (cells == cells[..., :1]).all()
        assert s.metainfo['img_shape'] == (64, 48)
    assert len(torch.cat([s.gt_sem_seg.data.unique() for s in a]).unique()) >= 3
    with pytest.raises(ValueError, match='ignore_index'):
        SegmentationPrior(num_classes=6, img_shape=(64, 64), ignore_index=3)


def test_segmentation_loss_finite_grad_deterministic(upernet):
    prior = SegmentationPrior.from_segmentor(upernet, (64, 64))
    assert prior.num_classes == tiny_archs.SEG_CLASSES
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = prior.loss(upernet, x, prior.sample(2, torch.Generator().manual_seed(0)))
    terms = upernet.loss(x, prior.sample(2, torch.Generator().manual_seed(0)))
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(terms)
    torch.testing.assert_close(loss, terms['decode.loss_ce'] + terms['aux.loss_ce'])
    assert torch.isfinite(loss) and loss > 0
    (grad, ) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
