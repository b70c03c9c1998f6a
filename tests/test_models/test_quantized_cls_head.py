"""Classifiers: the student's head is fake-quantized (input and weight) and trained.

Dense tasks keep their heads in full precision (only the backbone is quantized).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import load_checkpoint
from torch.overrides import TorchFunctionMode

import maskaq_plugin  # noqa: F401
import maskaq_plugin.utils  # noqa: F401  (weights_only loading of MMEngine checkpoints)
import tiny_archs
from maskaq_plugin.quant import quantizer_info
from maskaq_plugin.quant.inspect import iter_quantizers

A_BITS, W_BITS = 3, 4
ARCHS = dict(vit=(tiny_archs.deit_tiny_cls, 64), vit_gap=(tiny_archs.vit_gap_cls, 32))


def _build(name, seed=0, **kwargs):
    arch, size = ARCHS[name]
    torch.manual_seed(seed)
    cfg = dict(type='MaskAQAlgorithm', architecture=arch(), w_bits=W_BITS, a_bits=A_BITS,
               input_size=(3, size, size), allow_random_teacher=True)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _batch(algo, n=4, seed=0):
    from mmpretrain.structures import DataSample
    size = algo.input_size[1]
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x, [DataSample(metainfo=dict(img_shape=(size, size))).set_gt_label(i % 3)
               for i in range(n)]


class LinearSpy(TorchFunctionMode):
    """Records ``(input, weight)`` of the ``F.linear`` calls made inside ``module``.

    NNCF quantizes at the function level (its own TorchFunctionMode, entered inside the
    wrapped layer, runs the quantizers on the operation's inputs): an outer mode sees the
    arguments ``F.linear`` really computes with. A forward pre-hook on the ``nn.Linear``
    would see its input *before* the quantizer.
    """

    def __init__(self, module):
        super().__init__()
        self.calls, self.active = [], False
        self.handles = [module.register_forward_pre_hook(lambda *_: self._set(True)),
                        module.register_forward_hook(lambda *_: self._set(False))]

    def _set(self, value):
        self.active = value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.active and func is F.linear:
            self.calls.append((args[0].detach().clone(), args[1].detach().clone()))
        return func(*args, **(kwargs or {}))

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return super().__exit__(*exc)


@pytest.fixture(scope='module', params=list(ARCHS))
def cls_algo(request):
    algo = _build(request.param)
    x, _ = _batch(algo, n=8, seed=1)
    algo.calibrate_student_(x)
    return algo


def test_head_is_quantized_by_default_for_classifiers(cls_algo):
    algo = cls_algo
    assert algo.quantize_head and algo.head_scheme.keep_input_fp is False
    assert [n for n, _ in algo.quantized_modules()] == ['backbone', 'head']
    assert algo.quantized_modules()[1][1] is algo.student.head
    infos = quantizer_info(algo.student.head)
    assert {(i.kind, i.num_bits) for i in infos} == {('activation', A_BITS),
                                                    ('weight', W_BITS)}
    assert {(i.kind, i.port) for i in infos} == {('activation', 0), ('weight', 1)}
    assert not list(iter_quantizers(algo.teacher))
    # backbone quantizers are unchanged (patch-embedding input stays FP there)
    assert {i.kind for i in quantizer_info(algo.student.backbone)} == {'activation', 'weight'}


def test_head_linear_computes_on_quantized_input_and_weight(cls_algo):
    algo = cls_algo
    algo.eval()
    x, samples = _batch(algo, n=8, seed=2)
    with torch.no_grad(), LinearSpy(algo.student.head) as spy:
        preds = algo(x, copy.deepcopy(samples), mode='predict')  # the evaluation path
    with torch.no_grad(), LinearSpy(algo.teacher.head) as fp_spy:
        fp_preds = algo.teacher.predict(x, copy.deepcopy(samples))
    assert len(spy.calls) == 1 and len(fp_spy.calls) == 1
    inp, weight = spy.calls[0]
    fp_inp, fp_weight = fp_spy.calls[0]
    assert inp.shape == fp_inp.shape == (8, 32)
    assert 2 < inp.unique().numel() <= 2 ** A_BITS
    assert fp_inp.unique().numel() > 2 ** A_BITS  # the FP head's input is not on a grid
    assert all(row.unique().numel() <= 2 ** W_BITS for row in weight)
    assert any(row.unique().numel() > 2 ** W_BITS for row in fp_weight)
    scores = torch.stack([p.pred_score for p in preds])
    fp_scores = torch.stack([p.pred_score for p in fp_preds])
    assert scores.shape == fp_scores.shape and not torch.allclose(scores, fp_scores)
    torch.testing.assert_close(scores.sum(1), torch.ones(8))


def test_head_trains_from_the_kd_loss(cls_algo):
    algo = cls_algo
    trainable = [n for n, p in algo.named_parameters() if p.requires_grad]
    assert all(n.startswith(('student.backbone.', 'student.head.')) for n in trainable)
    head_trainable = [n for n in trainable if n.startswith('student.head.')]
    assert any(n.endswith('.weight') and '__nncf_hooks' not in n for n in head_trainable)
    assert any('__nncf_hooks' in n for n in head_trainable)  # the activation range learns
    if getattr(algo.student, 'neck', None) is not None:
        assert not any(p.requires_grad for p in algo.student.neck.parameters())
    algo.train()
    algo.zero_grad()
    x, samples = _batch(algo)
    losses = algo(x, samples, mode='loss')
    assert set(losses) == {'distill.loss_task', 'distill.loss_mssim'}
    sum(losses.values()).backward()
    head = dict(algo.student.head.named_parameters())
    weights = [p for n, p in head.items() if n.endswith('weight') and p.requires_grad
               and '__nncf_hooks' not in n]
    assert weights and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    ranges = [p for n, p in head.items() if '__nncf_hooks' in n and p.requires_grad]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ranges)
    assert all(p.grad is None for p in algo.teacher.parameters())
    wrapper = OptimWrapper(torch.optim.SGD(algo.parameters(), lr=0.1, momentum=0.9))
    before = copy.deepcopy(algo.student.head.state_dict())
    teacher_before = copy.deepcopy(algo.teacher.head.state_dict())
    algo.zero_grad()
    algo.train_step(dict(inputs=x * 58 + 120, data_samples=samples), wrapper)
    after = algo.student.head.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items())
    for k, v in algo.teacher.head.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_calibrate_student_sets_head_ranges_from_features(cls_algo):
    algo = cls_algo
    algo.eval()
    x, _ = _batch(algo, n=8, seed=3)
    with torch.no_grad():  # before QAT, the FP student's head input is the teacher's
        feats_t = algo._neck(algo.teacher, algo.teacher.backbone(x))
    fresh = _build('vit_gap' if algo.input_size[1] == 32 else 'vit')
    for a, b in zip(fresh.head_inputs(x), feats_t if isinstance(feats_t, tuple) else (feats_t,)):
        assert a.shape == b.shape
    params = {n: p for n, p in fresh.named_parameters() if '__nncf_hooks' in n}
    state = {k: v.clone() for k, v in fresh.student.head.state_dict().items()}
    assert fresh.calibrate_student_([x[:4], x[4:]], subset_size=6) is fresh
    assert all(p is dict(fresh.named_parameters())[n] for n, p in params.items())
    changed = [k for k, v in fresh.student.head.state_dict().items()
               if not torch.equal(v, state[k])]
    assert any('__nncf_hooks' in k for k in changed)
    assert not any('__nncf_hooks' not in k for k in changed)  # weights untouched
    with pytest.raises(ValueError, match='no image batch'):
        fresh.calibrate_student_([])


def test_state_dict_round_trip_with_quantized_head(tmp_path):
    a = _build('vit')
    x, samples = _batch(a)
    a.calibrate_student_(x)
    a.train()
    wrapper = OptimWrapper(torch.optim.SGD(a.parameters(), lr=0.5))
    a.train_step(dict(inputs=x * 58 + 120, data_samples=samples), wrapper)
    a.eval()
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(meta=dict(), state_dict=a.state_dict()), path)
    b = _build('vit', seed=1)
    b.eval()
    with torch.no_grad():
        ref, before = a(x, None, mode='tensor'), b(x, None, mode='tensor')
    assert not torch.allclose(ref, before)
    load_checkpoint(b, path, map_location='cpu', strict=True)  # as the Runner resumes
    with torch.no_grad():
        after = b(x, None, mode='tensor')
    assert torch.equal(after, ref)
    sa, sb = a.student.head.state_dict(), b.student.head.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_quantize_head_false_keeps_the_fp_frozen_head():
    algo = _build('vit', quantize_head=False)
    assert not algo.quantize_head and algo.head_scheme is None
    assert [n for n, _ in algo.quantized_modules()] == ['backbone']
    assert not list(iter_quantizers(algo.student.head))
    assert not any(p.requires_grad for p in algo.student.head.parameters())


def test_dense_tasks_quantize_only_the_backbone():
    arch = tiny_archs.upernet_swin
    algo = MODELS.build(dict(type='MaskAQAlgorithm', architecture=arch(),
                             input_size=(3, 64, 64), allow_random_teacher=True))
    assert algo.task == 'seg' and not algo.quantize_head and algo.head_scheme is None
    assert [n for n, _ in algo.quantized_modules()] == ['backbone']
    names = [n for n, _ in iter_quantizers(algo.student)]
    assert names and all(n.startswith('backbone:') for n in names)
    assert not list(iter_quantizers(algo.student.decode_head))
    assert not list(iter_quantizers(algo.student.auxiliary_head))
    with pytest.raises(ValueError, match='classifiers only'):
        MODELS.build(dict(type='MaskAQAlgorithm', architecture=arch(), quantize_head=True,
                          input_size=(3, 64, 64), allow_random_teacher=True))
