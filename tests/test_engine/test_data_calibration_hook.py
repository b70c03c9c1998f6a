"""DataCalibrationHook: ranges from the first real training batches, never after a resume."""
import copy
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from PIL import Image

import maskaq_plugin  # noqa: F401
import maskaq_plugin.utils  # noqa: F401  (weights_only loading of MMEngine checkpoints)
from maskaq_plugin.engine.hooks import DataCalibrationHook
from maskaq_plugin.quant import calibrate_ranges_

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)), 'test_models'))
import tiny_archs  # noqa: E402

# quantizer range entries of a state dict: NNCF's 'scale' ('nncf' recipe, and the
# min-max weights of 'lsq', refreshed from the weights) and LSQ's learned 'step'
RANGE_KEYS = ('.scale', '.step', '.zero_point')

pytest.importorskip('mmpretrain')


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """Six 64x64 RGB images with structure (gradients + a square), in two class folders."""
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(6):
        yy, xx = np.mgrid[0:64, 0:64]
        img = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.float64)
        x0, y0 = rng.integers(0, 40, 2)
        img[y0:y0 + 20, x0:x0 + 20] = rng.integers(0, 255, 3)
        (root / f'c{i % 2}').mkdir(exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f'c{i % 2}' / f'{i}.png')
    return str(root)


def _cfg(work_dir, image_folder, max_epochs, lr=1e-3, resume=False):
    return dict(
        model=dict(type='MaskAQAlgorithm', architecture=tiny_archs.deit_tiny_cls(),
                   allow_random_teacher=True, w_bits=4, a_bits=4, input_size=(3, 64, 64)),
        work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=3, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='CustomDataset', data_root=image_folder,
                         pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        custom_hooks=[dict(type='DataCalibrationHook', num_batches=1)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING',
        resume=resume, env_cfg=dict(dist_cfg=dict(backend='gloo')))


def _scales(model):
    return {k: v.detach().clone() for k, v in model.student.backbone.state_dict().items()
            if k.endswith(RANGE_KEYS)}


def test_calibrates_on_the_first_batch_in_place(tmp_path, image_folder):
    runner = Runner(**copy.deepcopy(_cfg(tmp_path / 'a', image_folder, 1, lr=0.0)))
    before = _scales(runner.model)
    params = {id(p) for n, p in runner.model.student.backbone.named_parameters()
              if n.endswith(RANGE_KEYS)}
    # the reference: the same calibration done by hand on the same first batch
    reference = copy.deepcopy(runner.model)
    batch = next(iter(runner.build_dataloader(runner._train_dataloader)))
    calibrate_ranges_(reference.student.backbone,
                      [reference.data_preprocessor(batch, training=True)['inputs']])
    runner.train()
    after = _scales(runner.model)
    expected = _scales(reference)
    assert any(not torch.equal(after[k], before[k]) for k in after)  # it did calibrate
    for k in after:  # lr 0: the trained ranges are the calibrated ones
        torch.testing.assert_close(after[k], expected[k], rtol=1e-5, atol=1e-7)
    in_optimizer = {id(p) for g in runner.optim_wrapper.optimizer.param_groups
                    for p in g['params']}
    assert params <= in_optimizer  # calibrated in place: the optimizer trains them
    hook = next(h for h in runner.hooks if isinstance(h, DataCalibrationHook))
    assert hook._calibrated


def test_resume_keeps_the_trained_ranges(tmp_path, image_folder):
    work = tmp_path / 'b'
    first = Runner(**copy.deepcopy(_cfg(work, image_folder, 2, lr=0.05)))
    first.train()
    trained = _scales(first.model)
    ckpt = torch.load(osp.join(work, 'epoch_2.pth'), weights_only=True, map_location='cpu')
    assert ckpt['meta']['maskaq_data_calibration'] == dict(calibrated=True)
    # resume at the end: before_train runs, no step does; the ranges must stay trained
    again = Runner(**copy.deepcopy(_cfg(work, image_folder, 2, lr=0.05, resume=True)))
    again.train()
    resumed = _scales(again.model)
    for k in trained:
        torch.testing.assert_close(resumed[k], trained[k])
    # and a recalibration would have given different values (so the check can fail)
    probe = copy.deepcopy(again.model)
    batch = next(iter(again.build_dataloader(again._train_dataloader)))
    calibrate_ranges_(probe.student.backbone,
                      [probe.data_preprocessor(batch, training=True)['inputs']])
    assert any(not torch.allclose(_scales(probe)[k], trained[k]) for k in trained)


def test_rejects_bad_num_batches():
    with pytest.raises(ValueError, match='num_batches must be a positive int, got 0'):
        DataCalibrationHook(num_batches=0)
