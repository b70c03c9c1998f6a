"""End to end with a real MMEngine Runner: MaskAQ QAT of a tiny Swin Mask R-CNN and a
tiny Swin UperNet on digit scenes, real CocoMetric / IoUMetric, checkpoint reload.

Each run: round 0 (bootstrap, calibration, synthesis with the student), QAT, one
refresh, validation on real images, then a fresh Runner loads the last checkpoint
(weights_only, strict) and must predict exactly what the trained model predicts.
"""
import copy
import json
import math
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import MODELS
from mmengine.runner import Runner

import maskaq_plugin  # noqa: F401
import maskaq_plugin.utils  # noqa: F401  (weights_only loading of MMEngine checkpoints)
import tiny_archs
from maskaq_plugin.synthesis.bank import SampleBank

DET_CLASSES = tuple(str(d) for d in range(10))
SEG_CLASSES = ('background', ) + DET_CLASSES
pytestmark = pytest.mark.e2e



def _runner(cfg):
    # Runner(**cfg) rather than Runner.from_cfg: the latter formats the config with yapf
    # (dump, log, every checkpoint), several seconds of CPU per call for these configs.
    return Runner(**copy.deepcopy(cfg))

def _fallback_scenes(out, num_val, size=64, seed=0):
    """Random rectangles on noise, COCO + ADE layout (when OpenCV's digits are absent)."""
    rng = np.random.default_rng(seed)
    for split, coco_split, ade_split in (('val', 'val', 'validation'), ):
        dirs = [osp.join(out, 'coco', coco_split), osp.join(out, 'coco', 'annotations'),
                osp.join(out, 'ade', 'images', ade_split),
                osp.join(out, 'ade', 'annotations', ade_split)]
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        images, anns = [], []
        for i in range(num_val):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            seg = np.zeros((size, size), np.uint8)
            for _ in range(2):
                x, y = (int(v) for v in rng.integers(0, size - 20, 2))
                w, h = (int(v) for v in rng.integers(8, 20, 2))
                cls = int(rng.integers(0, 10))
                img[y:y + h, x:x + w] = rng.integers(0, 255, 3)
                seg[y:y + h, x:x + w] = cls + 1
                anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=cls + 1,
                                 bbox=[x, y, w, h], area=w * h, iscrowd=0,
                                 segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
            name = f'{i:04d}.png'
            cv2.imwrite(osp.join(dirs[0], name), img)
            cv2.imwrite(osp.join(dirs[2], name), img)
            cv2.imwrite(osp.join(dirs[3], name), seg)
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        with open(osp.join(dirs[1], f'instances_{coco_split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=[
                dict(id=d + 1, name=str(d)) for d in range(10)]), f)


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('digit_scenes'))
    try:
        from maskaq_plugin.datasets import digit_scenes
        digit_scenes.generate(out, num_train=1, num_val=4, size=64, seed=0, progress=False)
    except (FileNotFoundError, ImportError):
        _fallback_scenes(out, num_val=4)
    return out


def _fp_checkpoint(arch, path):
    torch.manual_seed(0)
    torch.save(dict(state_dict=MODELS.build(copy.deepcopy(arch)).state_dict()), path)
    return path


def _runtime(work_dir, model, train_loop, hook, val_dataloader, val_evaluator, scope,
             by_epoch):
    return dict(
        default_scope=scope, work_dir=work_dir, model=model,
        train_cfg=train_loop, val_cfg=dict(type='ValLoop'),
        val_dataloader=val_dataloader, val_evaluator=val_evaluator,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-4, momentum=0.9, nesterov=True)),
        custom_hooks=[hook],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch,
                            interval=train_loop.get('max_epochs', train_loop.get('max_iters'))),
            logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=by_epoch), randomness=dict(seed=0),
        log_level='WARNING', env_cfg=dict(dist_cfg=dict(backend='gloo')))


def _det_cfg(data, work_dir, ckpt):
    arch = tiny_archs.mask_rcnn_swin(num_classes=10)
    meta = dict(classes=DET_CLASSES)
    ann = osp.join(data, 'coco', 'annotations', 'instances_val.json')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(64, 64), keep_ratio=True),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                      'img_shape', 'scale_factor'))]
    return _runtime(
        str(work_dir),
        model=dict(type='MaskAQAlgorithm', architecture=arch,
                   teacher_checkpoint=_fp_checkpoint(arch, ckpt), w_bits=4, a_bits=8,
                   input_size=(3, 64, 64)),
        train_loop=dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=2),
        hook=dict(type='SampleRefreshHook', interval=1, by_epoch=True, batch_size=2,
                  synthesis=dict(iters=2), bootstrap_iters=2),
        val_dataloader=dict(batch_size=2, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            dataset=dict(type='CocoDataset', data_root=data, ann_file=ann,
                                         data_prefix=dict(img='coco/val/'), metainfo=meta,
                                         test_mode=True, pipeline=pipeline)),
        val_evaluator=dict(type='CocoMetric', ann_file=ann, metric=['bbox', 'segm']),
        scope='mmdet', by_epoch=True) | dict(train_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='MaskAQSyntheticDataset', task='det', num_samples=2,
                         metainfo=meta)))


def _seg_cfg(data, work_dir, ckpt):
    arch = tiny_archs.upernet_swin(num_classes=11)
    meta = dict(classes=SEG_CLASSES)
    return _runtime(
        str(work_dir),
        model=dict(type='MaskAQAlgorithm', architecture=arch,
                   teacher_checkpoint=_fp_checkpoint(arch, ckpt), w_bits=4, a_bits=8,
                   input_size=(3, 64, 64)),
        train_loop=dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2),
        hook=dict(type='SampleRefreshHook', interval=1, by_epoch=False, batch_size=2,
                  synthesis=dict(iters=2), bootstrap_iters=2),
        val_dataloader=dict(
            batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='BaseSegDataset', data_root=data, metainfo=meta,
                         img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                         data_prefix=dict(img_path='ade/images/validation',
                                          seg_map_path='ade/annotations/validation'),
                         pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='LoadAnnotations'),
                                   dict(type='PackSegInputs')])),
        val_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        scope='mmseg', by_epoch=False) | dict(train_dataloader=dict(
            # a persistent worker forked before the bank exists: the hook restarts it
            batch_size=2, num_workers=1, persistent_workers=True,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dict(type='MaskAQSyntheticDataset', task='seg', num_samples=2,
                         metainfo=meta)))


def _predictions(runner, task):
    model = runner.model.eval()
    batch = next(iter(runner.val_dataloader))
    with torch.no_grad():
        out = model.val_step(copy.deepcopy(batch))
    if task == 'det':
        return [torch.cat([o.pred_instances.bboxes, o.pred_instances.scores[:, None],
                           o.pred_instances.masks.flatten(1).float()], 1) for o in out]
    return [o.seg_logits.data for o in out]


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_maskaq_runner_end_to_end(task, scenes, tmp_path):
    make_cfg = _det_cfg if task == 'det' else _seg_cfg
    cfg = make_cfg(scenes, tmp_path / 'work', str(tmp_path / 'fp.pth'))
    runner = _runner(cfg)
    runner.train()

    # two rounds: round 0 before training, one refresh; keep_rounds=1 pruned round 0
    bank = SampleBank(osp.join(tmp_path, 'work', 'sample_bank'))
    assert bank.rounds() == [1] and bank.verify_round(1) == []
    assert bank.read_manifest(1)['num_images'] == 2

    hub = runner.message_hub
    keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'] if task == 'det' \
        else ['mIoU']
    for key in keys:
        value = hub.get_scalar(f'val/{key}').current()
        assert math.isfinite(value) and value >= 0, (key, value)
    assert math.isfinite(hub.get_scalar('train/distill.loss_mssim').current())
    assert math.isfinite(hub.get_scalar('train/distill.loss_task').current())

    # a fresh Runner + model loads the checkpoint (weights_only, strict): same outputs
    last = open(osp.join(tmp_path, 'work', 'last_checkpoint')).read().strip()
    expected = _predictions(runner, task)
    cfg2 = copy.deepcopy(cfg)
    cfg2['work_dir'] = str(tmp_path / 'reload')
    runner2 = _runner(cfg2)
    before = _predictions(runner2, task)
    runner2.load_checkpoint(last, strict=True)
    after = _predictions(runner2, task)
    for e, a, b in zip(expected, after, before):
        assert e.shape == a.shape and torch.equal(e, a)
    assert any(b.shape != e.shape or not torch.equal(b, e) for e, b in zip(expected, before))
