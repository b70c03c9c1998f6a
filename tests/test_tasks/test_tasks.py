"""The task objects: bank targets, flips and data samples of each task."""
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample

from maskaq_plugin.tasks import (ClassificationTask, DetectionTask, SegmentationTask,
                                 get_task)

META = dict(img_id=0, img_path='synthetic_0', ori_shape=(6, 8), img_shape=(6, 8), flip=False,
            flip_direction=None)


def test_get_task_and_defaults():
    assert isinstance(get_task('det'), DetectionTask)
    assert get_task('cls').augments == ('paper', 'flip', 'flip_color', 'none')
    assert get_task('det').default_augment == get_task('seg').default_augment == 'flip'
    assert [get_task(t).quantize_head for t in ('cls', 'det', 'seg')] == [True, False, False]
    with pytest.raises(ValueError, match="one of .*'det'.*got 'pose'"):
        get_task('pose')


def test_plain_targets_are_plain_tensors_and_ints():
    det = DetDataSample()
    det.gt_instances = InstanceData(bboxes=torch.tensor([[1, 2, 3, 4]], dtype=torch.float64),
                                    labels=torch.tensor([3], dtype=torch.int32))
    (box, ) = DetectionTask().plain_targets([det])
    assert box['bboxes'].dtype == torch.float32 and box['labels'].dtype == torch.int64
    assert box['bboxes'].tolist() == [[1, 2, 3, 4]] and box['labels'].tolist() == [3]
    small, large = SegDataSample(), SegDataSample()
    small.gt_sem_seg = PixelData(data=torch.tensor([[[0, 255]]]))
    large.gt_sem_seg = PixelData(data=torch.tensor([[[0, 300]]]))
    a, b = SegmentationTask().plain_targets([small, large])
    assert a.dtype == torch.uint8 and a.tolist() == [[0, 255]]
    assert b.dtype == torch.int32 and b.tolist() == [[0, 300]]
    assert ClassificationTask().plain_targets([torch.tensor(3), 4]) == [3, 4]


def test_flip_targets():
    boxes = torch.tensor([[1., 2., 3., 5.]])
    flipped = DetectionTask().flip_target(dict(bboxes=boxes, labels=torch.tensor([1])), 8)
    assert flipped['bboxes'].tolist() == [[5., 2., 7., 5.]]  # x' = w - x, corners swapped
    assert boxes.tolist() == [[1., 2., 3., 5.]]  # not in place
    seg = torch.arange(6).view(2, 3)
    assert SegmentationTask().flip_target(seg, 3).tolist() == [[2, 1, 0], [5, 4, 3]]
    assert ClassificationTask().flip_target(7, 8) == 7
    assert all(get_task(t).flip_target(None, 8) is None for t in ('cls', 'det', 'seg'))


def test_data_samples():
    det = DetectionTask().data_sample(META, None)
    assert det.gt_instances.bboxes.shape == (0, 4) and det.scale_factor == (1.0, 1.0)
    seg = SegmentationTask().data_sample(META, None, ignore_index=7)
    assert seg.gt_sem_seg.data.shape == (1, 6, 8) and (seg.gt_sem_seg.data == 7).all()
    assert seg.reduce_zero_label is False
    cls = ClassificationTask().data_sample(META, 2)
    assert cls.gt_label.tolist() == [2] and cls.img_shape == (6, 8)
