"""SampleRefreshHook with a real MMEngine Runner on a tiny mmpretrain ViT (CPU)."""
import copy
import json
import os
import os.path as osp
import shutil
import sys

import pytest
import torch
from mmengine.runner import Runner

import maskaq_plugin  # noqa: F401
import maskaq_plugin.utils  # noqa: F401  (weights_only loading of MMEngine checkpoints)
from maskaq_plugin.engine.hooks import SampleRefreshHook
from maskaq_plugin.synthesis.bank import BankMismatchError, SampleBank, model_fingerprint

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)), 'test_models'))
import tiny_archs  # noqa: E402

# quantizer range entries of a state dict: NNCF's 'scale' ('nncf' recipe, and the
# min-max weights of 'lsq', refreshed from the weights) and LSQ's learned 'step'
RANGE_KEYS = ('.scale', '.step', '.zero_point')

pytest.importorskip('mmpretrain')



def _runner(cfg):
    # Runner(**cfg) rather than Runner.from_cfg: the latter formats the config with yapf
    # (dump, log, every checkpoint), several seconds of CPU per call for these configs.
    return Runner(**copy.deepcopy(cfg))

def _cfg(work_dir, max_epochs=3, resume=False, **hook):
    hook = dict(dict(type='SampleRefreshHook', interval=1, batch_size=2,
                     synthesis=dict(iters=2), bootstrap_iters=2, keep_rounds=2), **hook)
    return dict(
        model=dict(type='MaskAQAlgorithm', architecture=tiny_archs.deit_tiny_cls(),
                   allow_random_teacher=True, w_bits=4, a_bits=8, input_size=(3, 64, 64)),
        work_dir=str(work_dir),
        train_dataloader=dict(batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              dataset=dict(type='MaskAQSyntheticDataset', task='cls',
                                           num_samples=4)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3, momentum=0.9)),
        custom_hooks=[hook],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmpretrain', randomness=dict(seed=0), log_level='WARNING',
        resume=resume, env_cfg=dict(dist_cfg=dict(backend='gloo')))


def _hook(runner):
    return next(h for h in runner.hooks if isinstance(h, SampleRefreshHook))


def _scales(model):
    return {k: v.clone() for k, v in model.student.backbone.state_dict().items()
            if k.endswith(RANGE_KEYS)}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Three epochs, a refresh after epochs 0 and 1 (none after the last)."""
    work = tmp_path_factory.mktemp('refresh')
    runner = _runner(_cfg(work))
    placeholder = _scales(runner.model)
    quantizer_ids = {id(p) for n, p in runner.model.student.backbone.named_parameters()
                     if n.endswith(RANGE_KEYS)}
    runner.train()
    return runner, work, placeholder, quantizer_ids


def test_round0_calibrates_in_place_and_refreshes(trained):
    runner, work, placeholder, quantizer_ids = trained
    hook = _hook(runner)
    bank = SampleBank(osp.join(work, 'sample_bank'))
    assert runner.train_dataloader.dataset.bank_dir == osp.join(work, 'sample_bank')
    assert bank.rounds() == [1, 2] and hook.refresh_round == 2  # keep_rounds=2, 0 pruned
    manifest = bank.read_manifest(2)
    assert manifest['num_images'] == 4 and manifest['input_size'] == [3, 64, 64]
    assert manifest['fingerprint'] == runner.model.fingerprint()
    assert manifest['norm'] == runner.model.norm and manifest['task'] == 'cls'
    assert manifest['scheme']['w_bits'] == 4
    data = bank.load_round(2)
    assert data['images'].shape == (4, 3, 64, 64) and len(data['targets']) == 4
    assert all(isinstance(t, int) for t in data['targets'])
    # calibration changed the ranges of the very Parameters the optimizer holds
    scales = _scales(runner.model)
    assert any(not torch.equal(scales[k], placeholder[k]) for k in scales)
    in_optimizer = {id(p) for g in runner.optim_wrapper.optimizer.param_groups
                    for p in g['params']}
    assert quantizer_ids <= in_optimizer
    # loss terms were logged
    assert 'synthesis/bootstrap_head' in runner.message_hub.log_scalars
    assert 'synthesis/mad' in runner.message_hub.log_scalars


def test_checkpoint_meta_is_plain_and_weights_only(trained):
    runner, work, *_ = trained
    ckpt = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=True, map_location='cpu')
    meta = ckpt['meta']['maskaq_sample_bank']
    json.dumps(meta)
    bank = SampleBank(osp.join(work, 'sample_bank'))
    assert meta == dict(refresh_round=2, manifest_sha256=bank.manifest_sha(2))
    epoch1 = torch.load(osp.join(work, 'epoch_1.pth'), weights_only=True, map_location='cpu')
    assert epoch1['meta']['maskaq_sample_bank']['refresh_round'] == 1


def test_resume_reuses_bank_and_keeps_ranges(trained, tmp_path, monkeypatch):
    runner, work, *_ = trained
    work2 = tmp_path / 'resume'
    os.makedirs(work2)
    shutil.copy2(osp.join(work, 'epoch_1.pth'), work2 / 'epoch_1.pth')  # its round is 1
    (work2 / 'last_checkpoint').write_text(str(work2 / 'epoch_1.pth'))
    shutil.copytree(osp.join(work, 'sample_bank'), work2 / 'sample_bank')
    bank = SampleBank(str(work2 / 'sample_bank'))
    round1 = {f: os.stat(osp.join(bank.round_dir(1), f)).st_mtime_ns
              for f in os.listdir(bank.round_dir(1))}
    ckpt = torch.load(work2 / 'epoch_1.pth', weights_only=True)
    saved = {k[len('student.backbone.'):]: v for k, v in ckpt['state_dict'].items()
             if k.startswith('student.backbone.') and k.endswith(RANGE_KEYS)}

    calls = []
    import maskaq_plugin.quant as quant
    monkeypatch.setattr(quant, 'calibrate_ranges_', lambda *a, **k: calls.append(a))
    runner2 = _runner(_cfg(work2, max_epochs=1, resume=True))
    runner2.train()  # already at max_epochs: before_train runs, no epoch
    hook = _hook(runner2)
    assert hook.refresh_round == 1 and not calls
    assert bank.rounds() == [1]  # round 2 was written after the checkpoint: removed
    assert {f: os.stat(osp.join(bank.round_dir(1), f)).st_mtime_ns
            for f in os.listdir(bank.round_dir(1))} == round1  # nothing rewritten
    scales = _scales(runner2.model)
    for k, v in saved.items():
        assert torch.equal(scales[k], v), k


def test_resume_regenerates_only_corrupt_shards(tmp_path):
    work = tmp_path / 'w'
    runner = _runner(_cfg(work, max_epochs=1))
    runner.train()
    bank = SampleBank(osp.join(work, 'sample_bank'))
    manifest = bank.read_manifest(0)
    assert len(manifest['shards']) == 2
    bad, good = manifest['shards']
    with open(osp.join(bank.round_dir(0), bad['file']), 'ab') as f:
        f.write(b'corrupt')
    good_mtime = os.stat(osp.join(bank.round_dir(0), good['file'])).st_mtime_ns
    runner2 = _runner(_cfg(work, max_epochs=1, resume=True))
    runner2.train()
    fresh = SampleBank(osp.join(work, 'sample_bank'))
    assert fresh.verify_round(0) == []
    new = {s['file']: s['sha256'] for s in fresh.read_manifest(0)['shards']}
    assert new[good['file']] == good['sha256'] and new[bad['file']] != bad['sha256']
    assert os.stat(osp.join(bank.round_dir(0), good['file'])).st_mtime_ns == good_mtime


def test_foreign_bank_is_refused(tmp_path):
    work = tmp_path / 'w'
    foreign = SampleBank(str(work / 'sample_bank'), fingerprint=model_fingerprint(
        'MaskRCNN/SwinTransformer', (3, 64, 64), [0] * 3, [1] * 3, False, 'det'))
    foreign.commit_round(0, [foreign.write_shard(0, torch.zeros(1, 3, 64, 64), rank=0,
                                                 index=0)], seed=0)
    runner = _runner(_cfg(work, max_epochs=1))
    with pytest.raises(BankMismatchError, match='MaskRCNN/SwinTransformer.*ImageClassifier'):
        runner.train()


def test_arguments_are_validated():
    with pytest.raises(ValueError, match='interval'):
        SampleRefreshHook(interval=-1)
    with pytest.raises(ValueError, match='unknown synthesis keys'):
        SampleRefreshHook(synthesis=dict(iter=3))
    with pytest.raises(ValueError, match='keep_rounds'):
        SampleRefreshHook(keep_rounds=0)
