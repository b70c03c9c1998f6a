"""tools/ argument handling and CPU multi-process setup (no training here)."""
import os

import pytest
import torch
import torch.distributed as dist

from maskaq_plugin.utils import load_config, setup_launcher

from .conftest import ROOT, load_tool

TINY_DET = os.path.join(ROOT, 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py')


def test_load_config_applies_cli_overrides():
    cfg = load_config(TINY_DET, {'train_cfg.max_epochs': 2, 'model.a_bits': 4})
    assert cfg.train_cfg.max_epochs == 2 and cfg.model.a_bits == 4
    assert cfg.work_dir == './work_dirs/maskaq_maskrcnn_swin-tiny_digits_w4a8'
    assert load_config(TINY_DET, work_dir='/tmp/x').work_dir == '/tmp/x'
    with pytest.raises(FileNotFoundError, match='no_such.py'):
        load_config('configs/no_such.py')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path only')
def test_cpu_launcher_uses_gloo_and_no_device_ids(monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '29531')
    cfg = load_config(TINY_DET, launcher='pytorch')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # OpenMMLab's default
    try:
        setup_launcher(cfg)
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU path only')
def test_cpu_launcher_errors_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match='--launcher slurm needs CUDA.*torchrun'):
        setup_launcher(load_config(TINY_DET, launcher='slurm'))
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='torchrun'):
        setup_launcher(load_config(TINY_DET, launcher='pytorch'))
    cfg = load_config(TINY_DET)
    assert setup_launcher(cfg) is cfg and 'model_wrapper_cfg' not in cfg


def test_tools_reject_bad_arguments_with_the_fix(tmp_path):
    train, test, export = load_tool('train'), load_tool('test'), load_tool('export')
    with pytest.raises(SystemExit, match='no such checkpoint'):
        train.main([TINY_DET, '--work-dir', str(tmp_path), '--resume', 'nope.pth'])
    with pytest.raises(SystemExit, match='--amp is not supported for MaskAQ'):
        train.main([TINY_DET, '--work-dir', str(tmp_path), '--amp'])
    with pytest.raises(SystemExit, match='does not exist'):
        test.main([TINY_DET, 'nope.pth', '--work-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match=r'\.pkl'):
        test.dump_metric('mmdet', 'results.json')
    with pytest.raises(SystemExit):  # argparse: the message names the missing file
        export.parse_args([TINY_DET, 'nope.pth', '--out', str(tmp_path)])


def test_show_dir_switches_on_each_library_hook(tmp_path):
    test = load_tool('test')
    for path, scope in (('configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py', 'mmdet'),
                        ('configs/mmseg/maskaq_upernet_swin-tiny_digits_w4a8.py', 'mmseg'),
                        ('configs/mmpretrain/maskaq_deit-small_in1k_w4a4.py', 'mmpretrain')):
        cfg = load_config(os.path.join(ROOT, path))
        test.enable_visualization(cfg, str(tmp_path))
        hook = cfg.default_hooks.visualization
        assert cfg.default_scope == scope
        if scope == 'mmpretrain':
            assert hook.enable and hook.out_dir == str(tmp_path)
        elif scope == 'mmdet':
            assert hook.draw and hook.test_out_dir == str(tmp_path)
        else:
            assert hook.draw and cfg.visualizer.save_dir == str(tmp_path)
