"""benchmarks/accuracy_dense.py: each variant's config changes what docs/method.md says, nothing else."""
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)
from benchmarks import accuracy_dense as acc  # noqa: E402

BUDGET = dict(num_samples=16, synthesis_iters=25, epochs=8, batch_size=8, refresh_every=4)


def _cfg(task, variant, bits='w3a3', seed=1):
    return acc.build_config(task, variant, bits, seed, BUDGET, 'data/digit_scenes')


def _refresh(cfg):
    hooks = [h for h in cfg.custom_hooks if h.type == 'SampleRefreshHook']
    return hooks[0] if hooks else None


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_maskaq_run_has_the_budget_bits_and_seed(task):
    cfg = _cfg(task, 'maskaq')
    assert (cfg.model.w_bits, cfg.model.a_bits) == (3, 3)
    assert cfg.randomness.seed == 1
    assert cfg.train_cfg.max_epochs == 8 and cfg.train_cfg.val_interval == 8
    assert cfg.param_scheduler[0].T_max == 8 and cfg.param_scheduler[0].end == 8
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.train_dataloader.dataset.type == 'MaskAQSyntheticDataset'
    assert cfg.train_dataloader.dataset.num_samples == 16
    hook = _refresh(cfg)
    assert hook.interval == 4 and hook.batch_size == 8 and hook.bootstrap_iters == 25
    assert hook.synthesis.method == 'maskaq' and hook.synthesis.iters == 25
    assert hook.synthesis.loss_weights == dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1)
    assert cfg.model.kd.mssim == 10.0 and cfg.model.kd.get('w_high', 2.0) == 2.0
    assert [h.type for h in cfg.custom_hooks] == ['SampleRefreshHook']  # no export
    assert cfg.val_dataloader.dataset.data_root == osp.join(ROOT, 'data/digit_scenes/')


def test_baselines_follow_method_md():
    noise, psaq, mimiq = (_cfg('det', v) for v in ('noise', 'psaq', 'mimiq'))
    for cfg, method in ((noise, 'noise'), (psaq, 'psaq'), (mimiq, 'mimiq')):
        hook = _refresh(cfg)
        assert hook.synthesis.method == method and hook.interval == 0  # no refresh
    assert noise.model.kd.mssim == 0 and psaq.model.kd.mssim == 0  # KD only
    assert mimiq.model.kd.mssim == 10.0 and mimiq.model.kd.w_high == 1.0  # unmasked SSIM


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_real_data_upper_bound_uses_the_same_number_of_real_images(task):
    cfg = _cfg(task, 'real')
    loader = cfg.train_dataloader
    assert loader.dataset.type != 'MaskAQSyntheticDataset'
    assert loader.dataset.indices == 16 and loader.batch_size == 8
    assert 'batch_sampler' not in loader and loader.sampler.type == 'DefaultSampler'
    assert [h.type for h in cfg.custom_hooks] == ['DataCalibrationHook']
    assert cfg.model.kd.mssim == 10.0  # the MaskAQ QAT loss


def test_ablations_change_one_thing():
    base = _refresh(_cfg('det', 'maskaq'))
    no_ent = _refresh(_cfg('det', 'maskaq-no-ent'))
    no_mad = _refresh(_cfg('det', 'maskaq-no-mad'))
    no_refresh = _refresh(_cfg('det', 'maskaq-no-refresh'))
    assert no_ent.synthesis.loss_weights == {**base.synthesis.loss_weights, 'ent': 0.0}
    assert no_mad.synthesis.loss_weights == {**base.synthesis.loss_weights, 'mad': 0.0}
    assert no_refresh.interval == 0 and no_refresh.synthesis == base.synthesis
    no_mssim = _cfg('det', 'maskaq-no-mssim')
    assert no_mssim.model.kd.mssim == 0.0 and _refresh(no_mssim).synthesis == base.synthesis
    random_mask = _cfg('det', 'maskaq-random-mask')
    assert _refresh(random_mask).synthesis == {**base.synthesis, 'mask_mode': 'random'}
    assert random_mask.model.kd.mask_mode == 'random' and random_mask.model.kd.mssim == 10.0
    no_qat = _cfg('seg', 'maskaq-no-qat')
    seg = _cfg('seg', 'maskaq')
    assert no_qat.optim_wrapper.optimizer.lr == 0.0 and seg.optim_wrapper.optimizer.lr == 1e-3
    assert _refresh(no_qat).interval == 0 and _refresh(no_qat).synthesis == _refresh(seg).synthesis
    assert no_qat.model == seg.model
    with pytest.raises(ValueError, match="unknown variant 'maskaq-typo'"):
        _cfg('det', 'maskaq-typo')


def test_summary_mean_and_spread():
    res = dict(results=[
        dict(task='seg', variant='noise', bits='w3a3', seed=s, metrics={'mIoU': m}, wall_s=10)
        for s, m in ((0, 40.0), (1, 42.0), (2, 44.0))])
    (mean, std, n), = [v['mIoU'] for v in acc.summarise(res).values()]
    assert (mean, n) == (42.0, 3) and std == pytest.approx(2.0)


def test_finished_runs_collects_every_call_of_the_same_budget(tmp_path):
    import json
    other = dict(BUDGET, epochs=2)
    for (task, variant, bits, seed, budget) in [
            ('det', 'maskaq', 'w3a3', 1, BUDGET), ('det', 'noise', 'w3a3', 0, BUDGET),
            ('det', 'maskaq-no-ent', 'w3a3', 0, BUDGET), ('seg', 'noise', 'w4a4', 0, other)]:
        d = tmp_path / task / variant / bits / f'seed{seed}'
        d.mkdir(parents=True)
        (d / 'result.json').write_text(json.dumps(dict(
            task=task, variant=variant, bits=bits, seed=seed, budget=budget,
            metrics={}, wall_s=1.0)))
    (tmp_path / 'det' / 'real' / 'w3a3' / 'seed0').mkdir(parents=True)  # unfinished run
    runs = acc.finished_runs(str(tmp_path), BUDGET)
    assert [(r['variant'], r['seed']) for r in runs] == [
        ('noise', 0), ('maskaq', 1), ('maskaq-no-ent', 0)]  # other budget left out


def test_a_changed_config_is_not_reused(tmp_path):
    """run_one reuses a stored result only for the same config text (a changed default, e.g.
    the segmentation gradient clipping, runs again); the lines the Runner adds to the dumped
    config (launcher, work_dir) do not count."""
    cfg = _cfg('seg', 'maskaq')
    stored = tmp_path / 'config.py'
    cfg.dump(str(stored))
    stored.write_text(stored.read_text() + "launcher = 'none'\nwork_dir = '/somewhere'\n")
    assert acc.config_text(str(stored)) == acc.config_text(cfg)
    cfg.optim_wrapper.clip_grad = None
    assert acc.config_text(str(stored)) != acc.config_text(cfg)
