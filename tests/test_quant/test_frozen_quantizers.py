"""Input-only backward of frozen fake quantizers: same input gradients, QAT untouched."""
import doctest
from contextlib import nullcontext

import pytest
import torch
from nncf.torch.quantization import quantize_functions as qf
from quant_models import images, tiny_vit

from maskaq_plugin.quant import QuantScheme, frozen, frozen_quantizer_backward, quantize_model


def _input_grad(qmodel, x):
    x = x.clone().requires_grad_(True)
    out = qmodel(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad


def test_clipped_inputs_get_no_gradient_as_in_nncf():
    x = torch.linspace(-3, 3, 601).requires_grad_(True)
    scale, low, rng = torch.tensor(1.5), torch.tensor(-1.0), torch.tensor(2.5)
    runs = [lambda: qf.symmetric_quantize(x, 16, -8, 7, scale, 1e-16),
            lambda: qf.asymmetric_quantize(x, 16, 0, 15, low, rng, 1e-16)]
    for run in runs:
        grads = []
        for ctx in (frozen_quantizer_backward, nullcontext):
            with ctx():
                out = run()
            x.grad = None
            (out * x.detach()).sum().backward()
            grads.append((out.detach(), x.grad.clone()))
        (out_f, g_f), (out_n, g_n) = grads
        assert torch.equal(out_f, out_n) and torch.equal(g_f, g_n)
        assert (g_f == 0).sum() > 100 and (g_f != 0).sum() > 100  # clipped and kept


@pytest.mark.parametrize('mode', ['symmetric', 'asymmetric'])
def test_frozen_quantizers_give_bit_identical_input_gradients(mode, monkeypatch):
    x = images(4, scale=2.0)  # wide enough to clip at the ranges
    q = quantize_model(tiny_vit(), QuantScheme(4, 4, recipe='nncf', activation_mode=mode),
                       x[:1],
                       calib_inputs=images(4))
    q.requires_grad_(False)
    calls, real = [], frozen._FrozenQuantize

    class Spy(real):
        @staticmethod
        def forward(ctx, *args):
            calls.append(args[0].shape)
            return real.forward(ctx, *args)

    monkeypatch.setattr(frozen, '_FrozenQuantize', Spy)
    out_ref, grad_ref = _input_grad(q, x)
    assert not calls
    with frozen_quantizer_backward():
        out, grad = _input_grad(q, x)
    assert torch.equal(out, out_ref) and torch.equal(grad, grad_ref)
    assert grad.abs().sum() > 0
    # every activation quantizer on the gradient path took the input-only backward;
    # weight quantizers (inputs without grad) kept NNCF's function
    assert len(calls) >= 2 * 5  # 2 blocks x (qkv, q@k, attn@v, proj, fc1, fc2 inputs)
    assert qf.QuantizeSymmetric.__name__ == 'QuantizeSymmetric'  # restored


def test_trainable_ranges_keep_nncf_backward():
    x = images(4, scale=2.0)
    q = quantize_model(tiny_vit(), QuantScheme(4, 4, recipe='nncf'), x[:1], calib_inputs=images(4))
    scales = [p for n, p in q.named_parameters() if p.is_floating_point() and 'nncf' in n]
    assert scales and all(p.requires_grad for p in scales)

    def scale_grads():
        q.zero_grad(set_to_none=True)
        _input_grad(q, x)
        return [p.grad.clone() for p in scales]

    ref = scale_grads()
    with frozen_quantizer_backward():
        got = scale_grads()
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def test_docstring_example_runs():
    assert doctest.testmod(frozen, raise_on_error=True).attempted > 0
