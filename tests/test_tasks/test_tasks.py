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


def test_pack_through_the_host_transforms():
    image = torch.rand(3, 6, 8) * 255
    det = DetectionTask().pack(image, None, META)
    assert torch.equal(det['inputs'], image)
    sample = det['data_samples']
    assert isinstance(sample, DetDataSample) and sample.scale_factor == (1.0, 1.0)
    assert sample.gt_instances.bboxes.shape == (0, 4)
    assert sample.ignored_instances.labels.numel() == 0
    boxes = dict(bboxes=torch.tensor([[1., 2., 3., 5.]]), labels=torch.tensor([4]))
    sample = DetectionTask().pack(image, boxes, META)['data_samples']
    assert sample.gt_instances.bboxes.dtype == torch.float32
    assert sample.gt_instances.bboxes.tolist() == [[1., 2., 3., 5.]]
    assert sample.gt_instances.labels.tolist() == [4] and sample.img_id == 0
    seg = SegmentationTask().pack(image, None, META, ignore_index=7)
    assert torch.equal(seg['inputs'], image)
    data = seg['data_samples'].gt_sem_seg.data
    assert data.shape == (1, 6, 8) and data.dtype == torch.int64 and (data == 7).all()
    assert seg['data_samples'].reduce_zero_label is False
    label_map = torch.randint(0, 4, (6, 8), dtype=torch.uint8)
    data = SegmentationTask().pack(image, label_map, META)['data_samples'].gt_sem_seg.data
    assert torch.equal(data[0], label_map.long())
    cls = ClassificationTask().pack(image, 2, META)
    assert cls['inputs'] is image
    assert cls['data_samples'].gt_label.tolist() == [2] and cls['data_samples'].img_shape == (6, 8)
    assert 'gt_label' not in ClassificationTask().pack(image, None, META)['data_samples']
