"""Weights-only loading of MMEngine checkpoints: resume works, crafted pickles are refused."""
import copy
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from torch import nn
from torch.utils.data import Dataset

import maskaq_plugin  # noqa: F401  (registers the allow-list)
from maskaq_plugin.utils import history_buffer_getattr, safe_globals


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(2)
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(self.bn(inputs))
        if mode == 'loss':
            return dict(loss=(out - labels).pow(2).mean())
        return [dict(pred=o, label=lbl) for o, lbl in zip(out, labels)]


class ToyDataset(Dataset):
    METAINFO = dict(classes=('a', 'b'))

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(12, 2, generator=gen)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


class ToyMetric(BaseMetric):
    """Returns numpy float32 values, as mmseg's IoUMetric does."""

    def process(self, data_batch, data_samples):
        self.results += [float((s['pred'] - s['label']).abs()) for s in data_samples]

    def compute_metrics(self, results):
        return dict(mae=np.float32(np.mean(results)))


def _runner(work_dir, max_epochs, **kwargs):
    loader = dict(
        dataset=ToyDataset(),
        sampler=dict(type='DefaultSampler', shuffle=True),
        batch_size=3,
        collate_fn=dict(type='default_collate'))
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=copy.deepcopy(loader),
        val_evaluator=[ToyMetric()],
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True)),
        param_scheduler=[dict(type='CosineAnnealingLR', T_max=4, eta_min_ratio=0.01,
                              by_epoch=True, convert_to_iter_based=True)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A real Runner trained 2 epochs: (work_dir, runner)."""
    work_dir = tmp_path_factory.mktemp('toy')
    runner = _runner(work_dir, max_epochs=2)
    runner.train()
    return work_dir, runner


def test_mmengine_checkpoint_needs_exactly_the_allow_list(trained):
    work_dir, _ = trained
    path = str(work_dir / 'epoch_2.pth')
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        # Without the allow-list torch refuses the file (the bug being fixed).
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            torch.load(path)
    finally:
        torch.serialization.add_safe_globals(registered)
    assert found == {
        'builtins.getattr', 'mmengine.logging.history_buffer.HistoryBuffer',
        'numpy._core.multiarray._reconstruct', 'numpy._core.multiarray.scalar',
        'numpy.dtype', 'numpy.ndarray'
    }
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    ckpt = torch.load(work_dir / 'epoch_2.pth')  # weights_only=True (torch's default)
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 8
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.statistics('mean') > 0


def test_resume_continues_counters_optimizer_and_message_hub(trained):
    work_dir, first = trained
    saved = torch.load(work_dir / 'epoch_2.pth')
    runner = _runner(work_dir, max_epochs=3, resume=True)  # 'auto': last_checkpoint
    seen = {}

    def grab(runner):
        seen.update(
            epoch=runner.epoch,
            iter=runner.iter,
            momentum=[s['momentum_buffer'].clone()
                      for s in runner.optim_wrapper.optimizer.state.values()],
            lr=runner.optim_wrapper.get_lr()['lr'][0],
            loss_count=runner.message_hub.get_scalar('train/loss').data[1].sum())

    runner.register_hook(_CallbackHook(grab), priority='VERY_LOW')
    runner.train()
    assert seen['epoch'] == 2 and seen['iter'] == 8
    saved_state = saved['optimizer']['state']
    assert len(seen['momentum']) == len(saved_state) == 4
    for got, ref in zip(seen['momentum'], saved_state.values()):
        torch.testing.assert_close(got, ref['momentum_buffer'])
    # Cosine schedule continues from step 8 of 16 (T_max=4 epochs x 4 iters), not restarts.
    assert seen['lr'] == pytest.approx(first.optim_wrapper.get_lr()['lr'][0])
    assert seen['lr'] < 0.1 * 0.7  # a restart would give 0.1
    assert seen['loss_count'] == 8  # the loss history of the first 8 iterations came back
    assert runner.epoch == 3 and runner.iter == 12
    assert (work_dir / 'epoch_3.pth').exists()


class _CallbackHook(Hook):

    def __init__(self, fn):
        self.fn = fn

    def before_train(self, runner):
        self.fn(runner)


# ---- crafted checkpoints -------------------------------------------------------------

class _Payload:
    """Unpickling this with the plain pickle module runs ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _GetattrChain:
    """Reaches ``os`` through ``getattr(HistoryBuffer, '__init__').__globals__``."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def write_malicious(path, marker, kind='system'):
    obj = _Payload(marker) if kind == 'system' else _GetattrChain()
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': obj}, path)
    return path


@pytest.mark.parametrize('kind', ['system', 'getattr'])
def test_crafted_checkpoint_is_refused_by_every_mmengine_path(tmp_path, kind):
    marker = tmp_path / 'PWNED'
    path = str(write_malicious(tmp_path / 'evil.pth', marker, kind))
    loaders = [
        lambda: torch.load(path),
        lambda: CheckpointLoader.load_checkpoint(path, map_location='cpu'),
        lambda: load_checkpoint(ToyModel(), path, map_location='cpu'),
        lambda: _runner(tmp_path / 'wd', max_epochs=1).load_checkpoint(path),
    ]
    for load in loaders:
        with pytest.raises(pickle.UnpicklingError):
            load()
    assert not marker.exists()


def test_getattr_stand_in_only_resolves_history_buffer_statistics():
    assert history_buffer_getattr(HistoryBuffer, 'min') is HistoryBuffer.min
    with pytest.raises(pickle.UnpicklingError, match="'__init__'"):
        history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        history_buffer_getattr(os, 'system')
    names = [g[1] if isinstance(g, tuple) else g for g in safe_globals()]
    assert getattr not in names and np.dtypes.ObjectDType not in names


def test_crafted_files_are_refused_by_the_plugin_loaders(tmp_path):
    from maskaq_plugin.models.export import load_quantized_student
    from maskaq_plugin.models.architecture import load_state_dict_strict
    from maskaq_plugin.synthesis.bank import SampleBank
    marker = tmp_path / 'PWNED'
    evil = str(write_malicious(tmp_path / 'evil.pth', marker))
    # teacher_checkpoint of MaskAQAlgorithm
    with pytest.raises(RuntimeError, match='Weights only load failed'):
        load_state_dict_strict(nn.Linear(1, 1), evil)
    # quantized_student.pth (quant state)
    with pytest.raises(pickle.UnpicklingError):
        load_quantized_student(nn.Linear(1, 1), evil)
    # a sample bank shard whose manifest hash matches the crafted file
    bank = SampleBank(str(tmp_path / 'bank'))
    record = bank.write_shard(0, torch.zeros(1, 3, 8, 8), rank=0, index=0,
                              targets=[_Payload(marker)])
    bank.commit_round(0, [record], seed=0)
    assert bank.shard_ok(0, record)
    with pytest.raises(pickle.UnpicklingError):
        bank.load_shard(0, record)
    with pytest.raises(pickle.UnpicklingError):
        bank.load_round(0)
    assert not marker.exists()
