"""MaskAQAlgorithm trains with every teacher and student module in eval mode.

The QAT step must not run dropout / stochastic depth (drop path) or update BatchNorm
statistics (docs/method.md, Stage 2; ``run_classification_qat`` does the same), while
``algo.training`` follows ``algo.train(mode)`` for MMEngine.
"""
import pytest
import torch
from mmengine.registry import MODELS

import maskaq_plugin  # noqa: F401
import tiny_archs


def _with_dropout(arch_fn):
    arch = arch_fn()
    arch['backbone'].update(drop_path_rate=0.3, drop_rate=0.1, attn_drop_rate=0.1)
    return arch


ARCHS = dict(upernet=(lambda: _with_dropout(tiny_archs.upernet_swin), 64),
             vit_gap=(tiny_archs.vit_gap_cls, 32))


def _build(name, **kwargs):
    arch, size = ARCHS[name]
    torch.manual_seed(0)
    cfg = dict(type='MaskAQAlgorithm', architecture=arch(), w_bits=4, a_bits=8,
               input_size=(3, size, size), allow_random_teacher=True)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _batch(algo, n=2):
    size = algo.input_size[1]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    if algo.task == 'cls':
        from mmpretrain.structures import DataSample
        return x, [DataSample(metainfo=dict(img_shape=(size, size))).set_gt_label(0)
                   for _ in range(n)]
    return x, algo.synthesis_prior().sample(n, gen)


@pytest.fixture(scope='module', params=list(ARCHS))
def algo(request):
    return _build(request.param)


def _record_modes(algo):
    """Forward pre-hooks on every teacher / student module: ``{path: [training, ...]}``."""
    seen, handles = {}, []
    for prefix, root in (('teacher', algo.teacher), ('student', algo.student)):
        for path, module in root.named_modules():
            key = f'{prefix}.{path}' if path else prefix
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, key=key: seen.setdefault(key, []).append(mod.training)))
    return seen, handles


def test_qat_step_runs_every_module_in_eval_mode(algo):
    drop = [m for m in algo.student.backbone.modules()
            if type(m).__name__ in ('DropPath', 'Dropout') and
            getattr(m, 'drop_prob', getattr(m, 'p', 0)) > 0]
    assert drop  # the architecture does have active stochastic layers
    algo.train()
    assert algo.training  # MMEngine reads it
    x, samples = _batch(algo)
    seen, handles = _record_modes(algo)
    try:
        losses = algo(x, samples, mode='loss')
        sum(losses.values()).backward()
    finally:
        for h in handles:
            h.remove()
    ran = {k for k in seen}
    assert any(k.startswith('student.backbone.') for k in ran)
    assert any(k.startswith('teacher.backbone.') for k in ran)
    head = 'student.decode_head' if algo.task == 'seg' else 'student.head'
    assert head in ran  # the task KD ran the student's head
    assert any(type(algo.student.get_submodule(k[len('student.'):])).__name__
               in ('DropPath', 'Dropout') for k in ran if k.startswith('student.'))
    in_train_mode = sorted(k for k, modes in seen.items() if any(modes))
    assert not in_train_mode, f'modules in train mode during the QAT step: {in_train_mode[:8]}'
    grads = [p.grad for p in algo.student.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # still trains


def test_student_is_deterministic_in_train_mode(algo):
    algo.train()
    x, _ = _batch(algo)
    with torch.no_grad():
        first = algo.student.backbone(x)
        second = algo.student.backbone(x)
        out1 = algo(x, None, mode='tensor')
        out2 = algo(x, None, mode='tensor')
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    for a, b in zip(out1 if isinstance(out1, tuple) else (out1, ),
                    out2 if isinstance(out2, tuple) else (out2, )):
        assert torch.equal(a, b)


def test_train_heads_makes_heads_trainable_but_keeps_eval_mode():
    algo = _build('upernet', train_heads=True)
    assert all(p.requires_grad for p in algo.student.decode_head.parameters())
    assert not any(p.requires_grad for p in algo.teacher.parameters())
    for mode in (True, False, True):
        algo.train(mode)
        assert algo.training is mode
        assert not any(m.training for m in algo.student.modules())
        assert not any(m.training for m in algo.teacher.modules())
    bn = algo.student.decode_head.bottleneck.bn
    before = bn.running_mean.clone()
    x, samples = _batch(algo)
    sum(algo(x, samples, mode='loss').values()).backward()
    assert torch.equal(bn.running_mean, before)  # BatchNorm statistics stay
    assert algo.student.decode_head.conv_seg.weight.grad is not None
