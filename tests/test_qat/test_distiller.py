"""The Stage 2 loss built from the registry, its configs per task / method, and the
non-finite policy shared by both entry points."""
import pytest
import torch

from maskaq_plugin.attention import AttentionRecord
from maskaq_plugin.losses import FeatureMSELoss, KDLoss, MaskedAttentionSSIMLoss
from maskaq_plugin.losses.functional import kd_kl_loss
from maskaq_plugin.qat import (NonFiniteGuard, NonFiniteLossError, QATDistiller,
                               apply_flat_overrides, build_qat_optimizer,
                               distill_losses_for, flat_view, mssim_from_records,
                               qat_train_step)


def _records(seed):
    gen = torch.Generator().manual_seed(seed)
    return [AttentionRecord(f'l{i}', torch.randn(2, 2, 17, 17, generator=gen),
                            torch.randn(2, 2, 17, 8, generator=gen), True) for i in range(2)]


def test_methods_are_configurations_of_one_loss():
    maskaq = distill_losses_for('cls')
    assert {k: v['type'] for k, v in maskaq.items()} == dict(task='KDLoss',
                                                            mssim='MaskedAttentionSSIMLoss')
    assert distill_losses_for('cls', 'mimiq')['mssim'] == dict(maskaq['mssim'], w_high=1.0)
    for kd_only in ('psaq', 'noise'):
        assert list(QATDistiller(distill_losses_for('cls', kd_only)).losses) == ['task']
    det = QATDistiller(distill_losses_for('det')).losses
    assert [type(m).__name__ for m in det.values()] == ['FeatureMSELoss', 'DetectionKDLoss',
                                                        'MaskedAttentionSSIMLoss']
    assert flat_view(distill_losses_for('seg')) == dict(
        feat=1.0, task=1.0, mssim=10.0, temperature=1.0, top_ratio=0.1, w_high=2.0,
        w_low=1.0, mask_mode='informative')


def test_flat_overrides():
    cls = distill_losses_for('cls', kd=dict(feat=0.5, mssim_weight=3.0, w_low=0.5))
    assert cls['feat'] == dict(type='FeatureMSELoss', loss_weight=0.5)
    assert cls['mssim']['loss_weight'] == 3.0 and cls['mssim']['w_low'] == 0.5
    assert distill_losses_for('cls')['mssim']['loss_weight'] == 10.0  # defaults untouched
    with pytest.raises(ValueError, match=r"unknown kd keys \['lambda'\]"):
        apply_flat_overrides(cls, {'lambda': 1.0})
    with pytest.raises(ValueError, match="qat_loss.mask_mode must be .* got 'top'"):
        apply_flat_overrides(cls, dict(mask_mode='top'), name='qat_loss')


def test_distiller_terms_are_the_weighted_registered_losses():
    cfg = dict(feat=dict(type='FeatureMSELoss', loss_weight=0.5),
               task=dict(type='KDLoss', temperature=2.0, loss_weight=3.0),
               mssim=dict(type='MaskedAttentionSSIMLoss', loss_weight=10.0, top_ratio=0.2))
    distiller = QATDistiller(cfg)
    assert isinstance(distiller.losses['feat'], FeatureMSELoss)
    assert isinstance(distiller.losses['task'], KDLoss)
    assert isinstance(distiller.losses['mssim'], MaskedAttentionSSIMLoss)
    gen = torch.Generator().manual_seed(0)
    f_fp, f_q, z_fp, z_q = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(4))
    z_fp, z_q = z_fp.flatten(1), z_q.flatten(1)
    fp, q = _records(0), _records(1)
    out = distiller(feats=([f_fp], [f_q]), task=lambda loss: loss(z_fp, z_q), records=(fp, q))
    assert list(out) == ['feat', 'task', 'mssim']
    assert torch.equal(out['task'], 3.0 * kd_kl_loss(z_fp, z_q, 2.0))
    assert torch.equal(out['mssim'], 10.0 * mssim_from_records(fp, q, top_ratio=0.2))
    assert torch.equal(out['feat'], FeatureMSELoss(0.5)([f_fp], [f_q]))
    with pytest.raises(ValueError, match=r"unknown distill_losses terms \['kd'\]"):
        QATDistiller(dict(kd=dict(type='KDLoss')))
    with pytest.raises(ValueError, match='every loss weight .* is 0'):
        QATDistiller(dict(task=dict(type='KDLoss', loss_weight=0.0)))


def test_nonfinite_policy_skips_then_raises():
    guard = NonFiniteGuard(max_steps=3)
    nan, one = dict(loss=torch.tensor(float('nan'))), dict(loss=torch.tensor(1.0))
    assert [guard.check(t) for t in (nan, nan, one, nan)] == [False, False, True, False]
    assert (guard.in_row, guard.total) == (1, 3)
    guard.check(nan)
    with pytest.raises(NonFiniteLossError, match='3 QAT steps in a row'):
        guard.check(nan)
    with pytest.raises(ValueError, match='max_nonfinite_steps must be an int >= 1, got 0'):
        NonFiniteGuard(0)


def test_api_step_skips_a_nonfinite_loss_like_the_wrapper():
    """No update, no optimizer state, the schedule advances; the limit raises."""
    w = torch.nn.Parameter(torch.ones(1))
    opt, sched = build_qat_optimizer([w], total_steps=4)
    guard = NonFiniteGuard(max_steps=2)
    assert qat_train_step(lambda: dict(loss=w.sum() * float('nan')), opt, sched, guard) == {}
    assert w.item() == 1 and w.grad is None and not opt.state and sched.last_epoch == 1
    assert qat_train_step(lambda: dict(loss=w.sum()), opt, sched, guard) == dict(loss=1.0)
    qat_train_step(lambda: dict(loss=w.sum() * float('inf')), opt, sched, guard)
    with pytest.raises(NonFiniteLossError, match='2 QAT steps in a row'):
        qat_train_step(lambda: dict(loss=w.sum() * float('nan')), opt, sched, guard)
