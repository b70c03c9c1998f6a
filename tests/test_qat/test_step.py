"""QAT optimiser, schedule and refresh epochs."""
import pytest
import torch

from maskaq_plugin.qat import RefreshSchedule, build_qat_optimizer, qat_train_step


def test_refresh_schedule_of_the_paper():
    sched = RefreshSchedule(30, 100)
    assert sched.epochs == [30, 60, 90] and sched.num_rounds == 4
    assert [e for e in range(100) if e in sched] == [30, 60, 90]
    assert RefreshSchedule(None, 10).epochs == [] and 5 not in RefreshSchedule(0, 10)
    assert RefreshSchedule(5, 10).epochs == [5]
    with pytest.raises(ValueError, match='-1'):
        RefreshSchedule(-1, 10)
    with pytest.raises(ValueError, match='epochs'):
        RefreshSchedule(3, 0)


def test_sgd_nesterov_cosine_to_one_percent():
    w = torch.nn.Parameter(torch.ones(3))
    opt, sched = build_qat_optimizer([w], lr=0.1, total_steps=10)
    group = opt.param_groups[0]
    assert group['nesterov'] and group['momentum'] == 0.9
    lrs = []
    for _ in range(10):
        lrs.append(group['lr'])
        qat_train_step(lambda: dict(loss=(w**2).sum()), opt, sched)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.001 + 0.099 * 0.5)  # half-way: mid of the cosine
    assert group['lr'] == pytest.approx(0.001)  # after the run: 1 % of lr
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert (w.detach().abs() < 1).all()


def test_non_finite_loss_raises_before_stepping():
    w = torch.nn.Parameter(torch.ones(1))
    opt, sched = build_qat_optimizer([w], total_steps=1)
    with pytest.raises(FloatingPointError, match='nan'):
        qat_train_step(lambda: dict(loss=w.sum() * float('nan')), opt, sched)
    assert w.item() == 1


@pytest.mark.parametrize('module', ['maskaq_plugin.qat.step', 'maskaq_plugin.qat.qat_augment'])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
