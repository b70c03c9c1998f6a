"""``--device`` of tools/: the default, refusals that name the fix, CPU kept on a CUDA box."""
import pytest
import torch

from maskaq_plugin.utils import load_config, resolve_device, setup_launcher, use_runner_device

from .conftest import ROOT, load_tool

TINY_DET = f'{ROOT}/configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py'


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports one CUDA device (nothing may actually use it)."""
    import mmengine.device.utils as mmengine_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(mmengine_device, 'DEVICE', 'cuda')  # as imported on a CUDA box


def test_default_and_refusals(no_cuda):
    assert resolve_device() == torch.device('cpu')
    assert resolve_device('cpu') == torch.device('cpu')
    with pytest.raises(ValueError, match=r"--device 'cuda'.*not available.*--device cpu"):
        resolve_device('cuda')
    with pytest.raises(ValueError, match=r"--device 'gpu0' is not a device.*cpu, cuda"):
        resolve_device('gpu0')
    with pytest.raises(ValueError, match=r"--device 'mps': only cpu and cuda"):
        resolve_device('mps')


def test_default_is_cuda_when_available(fake_cuda):
    assert resolve_device() == torch.device('cuda')
    with pytest.raises(ValueError, match=r'1 CUDA device.*cuda:0'):
        resolve_device('cuda:3')


@pytest.mark.parametrize('tool', ['train', 'test', 'synthesize'])
def test_tools_refuse_cuda_without_it(no_cuda, tool, tmp_path):
    argv = {'train': [TINY_DET, '--work-dir', str(tmp_path)],
            'test': [TINY_DET, 'nope.pth', '--work-dir', str(tmp_path)],
            'synthesize': [TINY_DET, '--out', str(tmp_path)]}[tool]
    with pytest.raises(SystemExit, match='CUDA is not available.*pass --device cpu'):
        load_tool(tool).main(argv + ['--device', 'cuda'])


def test_amp_is_refused_for_maskaq_with_the_reason(tmp_path):
    train = load_tool('train')
    with pytest.raises(SystemExit, match='--amp is not supported for MaskAQ.*GradScaler'):
        train.main([TINY_DET, '--work-dir', str(tmp_path), '--amp', '--device', 'cpu'])


def test_device_cpu_keeps_the_runner_on_cpu_where_cuda_exists(fake_cuda, monkeypatch):
    from mmengine.device import get_device
    assert get_device() == 'cuda'
    cfg = use_runner_device(load_config(TINY_DET), torch.device('cpu'))
    assert get_device() == 'cpu'  # Runner.wrap_model: model.to(get_device())
    # multi-process: gloo and no device_ids, although torch reports CUDA
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
                           MASTER_ADDR='127.0.0.1', MASTER_PORT='29533').items():
        monkeypatch.setenv(key, value)
    cfg = load_config(TINY_DET, launcher='pytorch')
    use_runner_device(cfg, torch.device('cpu'))
    import torch.distributed as dist
    try:
        setup_launcher(cfg, torch.device('cpu'))
        assert dist.get_backend() == 'gloo'
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None


def test_train_device_cpu_builds_the_runner_on_cpu(fake_cuda, monkeypatch, tmp_path):
    """tools/train.py --device cpu on a (pretend) CUDA machine: the model stays on the CPU."""
    from mmengine.runner import Runner
    seen = {}

    def fake_from_cfg(cfg):
        from mmengine.device import get_device
        seen['device'] = get_device()
        raise SystemExit('stop before the build')

    monkeypatch.setattr(Runner, 'from_cfg', staticmethod(fake_from_cfg))
    train = load_tool('train')
    monkeypatch.setattr(train, 'check_checkpoints', lambda cfg: None)
    with pytest.raises(SystemExit, match='stop before the build'):
        train.main([TINY_DET, '--work-dir', str(tmp_path), '--device', 'cpu'])
    assert seen['device'] == 'cpu'
