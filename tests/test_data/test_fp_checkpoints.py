"""The shipped FP checkpoints load weights-only into their configs and still work.

They are evaluated with the real Runner.test() (CocoMetric / IoUMetric) on the first 4 val
scenes, which equal the first 4 of the full val set that fp_metrics.json was measured on.
"""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# name -> (config, metric key, lower bound on the 4 val scenes; measured values in the comments)
CASES = {
    'maskrcnn_swin-tiny_digits': ('configs/mmdet/maskrcnn_swin-tiny_fp_digits.py',
                                  {'coco/bbox_mAP': 0.0, 'coco/segm_mAP': 0.0}),
    # mIoU 42.76 on the 4 scenes (val 43.46); the old one-class-plateau teacher: 16.40
    'upernet_swin-tiny_digits': ('configs/mmseg/upernet_swin-tiny_fp_digits.py',
                                 {'mIoU': 30.0}),
}


def checkpoint_path(name):
    path = osp.join(ROOT, 'checkpoints', name + '.pth')
    if not osp.isfile(path):
        # Not yet trained and committed (see the note on issue #4): reported as a skip,
        # never as a pass.
        pytest.skip(f'{path} is not shipped yet: run `python tools/train_fp_models.py`')
    return path


@pytest.mark.parametrize('name', sorted(CASES))
def test_checkpoint_is_weights_only_and_small(name):
    path = checkpoint_path(name)
    assert osp.getsize(path) < 8 * 2**20
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert all(isinstance(v, torch.Tensor) for v in ckpt['state_dict'].values())
    assert ckpt['meta']['dataset_meta']['classes']
    with open(osp.join(ROOT, 'checkpoints', 'fp_metrics.json')) as f:
        record = json.load(f)['models'][name]
    assert record['metrics'] == ckpt['meta']['metrics']


@pytest.mark.parametrize('name', sorted(CASES))
def test_checkpoint_evaluates(name, digit_scenes, train_tool, tmp_path):
    config, lower_bounds = CASES[name]
    path = checkpoint_path(name)
    cfg = Config.fromfile(osp.join(ROOT, config))
    train_tool.set_data_root(cfg, digit_scenes)
    cfg.work_dir = str(tmp_path)
    cfg.load_from = path
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.default_hooks.logger.interval = 1000
    runner = Runner.from_cfg(cfg)
    state_dict = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    assert set(state_dict) == set(runner.model.state_dict())  # strict: nothing left out
    metrics = runner.test()
    for key, bound in lower_bounds.items():
        assert metrics[key] >= bound, (key, metrics[key])
