"""The floor of ``tools/benchmark.py floor`` is the models' own work inside our iteration.

``benchmarks/synthesis_floor.py`` divides one ``Synthesizer`` iteration by the floor,
F and Q forward plus the backward to the images alone. The ratio means "our overhead"
only if the floor computes what it says (the image gradient of both models, no
parameter gradient) and runs the same model operations as our iteration, nothing more.
"""
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import synthesis_floor
from benchmarks.common import MEAN, STD, tiny_deit
from benchmarks.synthesis_speed import _setup
from maskaq_plugin.quant import QuantScheme, frozen_quantizer_backward
from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer

# operations only the models run (no loss term, optimiser or augmentation uses them)
FORWARD_OPS = ('convolution', '_softmax', 'gelu', 'native_layer_norm')
BACKWARD_OPS = ('convolution_backward', '_softmax_backward_data', 'gelu_backward',
                'native_layer_norm_backward')


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope='module')
def models():
    torch.set_num_threads(1)
    teacher, student, size = _setup(lambda: tiny_deit(32, num_classes=10), 2, QuantScheme(4, 4))
    for model in (teacher, student):
        model.requires_grad_(False)
    return teacher, student, size


def test_floor_gradient_is_both_models_image_gradient(models):
    teacher, student, size = models
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    grad = synthesis_floor.floor_step(teacher, student, x)
    parts = []
    for model in (teacher, student):
        xi = x.clone().requires_grad_(True)
        model(xi).sum().backward()
        parts.append(xi.grad)
    assert torch.allclose(grad, parts[0] + parts[1], rtol=1e-5, atol=1e-6)
    assert parts[1].abs().sum() > 0 and not torch.allclose(parts[0], parts[1])
    assert all(p.grad is None for m in (teacher, student) for p in m.parameters())


def test_floor_runs_our_model_work_and_nothing_else(models):
    teacher, student, size = models
    syn = Synthesizer(teacher, prior=ClassificationPrior(10), input_size=size, mean=MEAN,
                      std=STD, student=student, iters=1, progress=False)
    with _OpCounter() as ours:
        syn.synthesize(2, 2, seed=0)
    x = torch.randn(2, *size)
    with frozen_quantizer_backward(), _OpCounter() as floor:
        synthesis_floor.floor_step(teacher, student, x)
    for op in FORWARD_OPS:  # the same two forwards ...
        assert floor.ops[op] == ours.ops[op] > 0, op
    # ... and backwards; ours has no gradient from Q's logits (only its attention scores
    # enter L_mad), so its backward skips Q's tail after the last scores
    for op in BACKWARD_OPS:
        assert floor.ops[op] >= ours.ops[op] > 0, op
    assert ours.ops['_softmax_backward_data'] == floor.ops['_softmax_backward_data'] - 1
    # nothing of its own: every operation kind of the floor occurs in ours, and ours has
    # the augmentation (roll), the AdamW step (lerp_, addcdiv_) and the clamp
    assert set(floor.ops) <= set(ours.ops), set(floor.ops) - set(ours.ops)
    assert {'roll', 'lerp_', 'addcdiv_', 'minimum', 'maximum'} <= set(ours.ops) - set(floor.ops)
    assert sum(floor.ops.values()) < sum(ours.ops.values())


def test_run_reports_paired_ratios(models):
    res = synthesis_floor.run(batch=2, iters=1, repeats=2, models={
        'tiny DeiT (32 px)': lambda: tiny_deit(32, num_classes=10)})
    m, = res['models']
    assert len(m['ratios']) == 2 and m['ratio'] == pytest.approx(sorted(m['ratios'])[0] / 2
                                                                  + sorted(m['ratios'])[1] / 2)
    assert m['s_per_iter']['ours'] > 0 and m['s_per_iter']['floor'] > 0
    assert 'ours ÷ floor' in synthesis_floor.markdown(res, 'cmd', 'machine')
