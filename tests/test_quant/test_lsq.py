"""Recipe 'lsq': the authors' quantizers on NNCF (LSQ activations, min-max weights).

Each test states the arithmetic by hand or transcribes the released code
(``quant_utils/quant_modules.py``: ``QuantAct_lsq``, ``SymmetricQuantFunction``), so a
change of gradient scale, zero point, init or weight range makes it fail.
"""
import math

import pytest
import torch
from nncf.common.quantization.structs import QuantizationScheme
from nncf.torch.quantization.layers import PTQuantizerSpec, SymmetricQuantizer
from quant_models import images, two_rank_world

from maskaq_plugin.quant import (QuantScheme, calibrate_ranges_, load_quantized,
                                 quantize_model, save_quantized)
from maskaq_plugin.quant.inspect import iter_quantizers, quantizer_info
from maskaq_plugin.quant.lsq import LSQActivationQuantizer, MinMaxWeightQuantizer


def act_quantizer(bits=3, step=0.5, zero_point=0.0, signed=True, grad_scale=1.0):
    spec = PTQuantizerSpec(num_bits=bits, mode=QuantizationScheme.ASYMMETRIC,
                           signedness_to_force=None, narrow_range=False, half_range=False,
                           scale_shape=(1,), logarithm_scale=False)
    q = LSQActivationQuantizer(spec)
    q.signed = signed
    with torch.no_grad():
        q.step.fill_(step)
        q.zero_point.fill_(zero_point)
        q.grad_scale.fill_(grad_scale)
    return q


def authors_lsq_forward(x, alpha, zero_point, q_min, q_max, g):
    """Transcription of ``QuantAct_lsq.forward`` after its init (released code)."""
    def grad_scale(v, scale):
        y_grad = v * scale
        return v.detach() - y_grad.detach() + y_grad

    def round_pass(v):
        return v.round().detach() - v.detach() + v

    alpha = grad_scale(alpha, g)
    _ = grad_scale(zero_point, g)  # computed and overwritten in the released code
    zero_point = round_pass(zero_point)
    x = round_pass((x / alpha + zero_point).clamp(q_min, q_max))
    return (x - zero_point) * alpha


def test_step_gradient_is_lsq_formula_by_hand():
    # 3-bit signed: codes [-4, 3], step s = 0.5, z = 0, g = 0.1.
    x = torch.tensor([0.6, -0.2, 1.7, -3.0, 0.26])
    w = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0])  # d loss / d out
    q = act_quantizer(step=0.5, grad_scale=0.1)
    (q(x) * w).sum().backward()
    # d out/d s: round(x/s) - x/s inside [-4, 3], the clipped code outside.
    v = x / 0.5  # [1.2, -0.4, 3.4, -6.0, 0.52]
    dout_ds = torch.tensor([1 - 1.2, 0 + 0.4, 3.0, -4.0, 1 - 0.52])
    expected = 0.1 * (w * dout_ds).sum()
    assert q.step.grad.item() == pytest.approx(expected.item(), rel=1e-6)
    assert q.step.grad.item() == pytest.approx(0.1 * (-0.2 + 0.8 - 3.0 - 2.0 + 1.44), rel=1e-6)
    # without LSQ's scale the gradient is exactly 1/g = 10 times larger
    raw = act_quantizer(step=0.5, grad_scale=1.0)
    (raw(x) * w).sum().backward()
    assert raw.step.grad.item() / q.step.grad.item() == pytest.approx(10.0, rel=1e-6)


def test_gradient_scale_relates_to_nncf_raw_gradient():
    """NNCF's symmetric quantizer learns the top of the range S = s·Q_p, summed raw.

    Measured relation (4 bits, per unit of step): at clipped values NNCF's gradient is
    LSQ's (Q_p or Q_n); inside the range it is LSQ's times Q_p/(2^b - 1). LSQ then
    multiplies the whole sum by g = 1/√(N·Q_p).
    """
    bits, step = 4, 0.3
    q_p, levels = 2**(bits - 1) - 1, 2**bits
    spec = PTQuantizerSpec(num_bits=bits, mode=QuantizationScheme.SYMMETRIC,
                           signedness_to_force=True, narrow_range=False, half_range=False,
                           scale_shape=(1,), logarithm_scale=False)
    gen = torch.Generator().manual_seed(0)
    inside = (torch.rand(200, generator=gen) * 4.4 - 2.3)  # within [-8, 7]·0.3
    clipped = torch.cat([torch.rand(30, generator=gen) + 2.2, -torch.rand(20, generator=gen)
                         - 2.5])
    for x, factor in ((inside, q_p / (levels - 1)), (clipped, 1.0)):
        nncf_q = SymmetricQuantizer(spec)
        with torch.no_grad():
            nncf_q.scale.fill_(step * q_p)
        nncf_q(x).sum().backward()
        g = 1 / math.sqrt(x.numel() * q_p)
        lsq = act_quantizer(bits=bits, step=step, grad_scale=g)
        out = lsq(x)
        assert torch.allclose(out, nncf_q(x).detach(), atol=1e-6)  # the same grid
        out.sum().backward()
        nncf_per_step = nncf_q.scale.grad.item() * q_p  # chain rule: d/ds = Q_p · d/dS
        assert lsq.step.grad.item() == pytest.approx(g * nncf_per_step / factor, rel=1e-4)
        assert abs(lsq.step.grad.item()) < abs(nncf_q.scale.grad.item())


def test_zero_point_gets_a_gradient_and_moves():
    q = act_quantizer(bits=3, step=0.5, zero_point=0.0, grad_scale=0.1)
    x = torch.tensor([-5.0, -4.0, -0.3, 0.4, 1.0])  # two values below the low end (-2.0)
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    before = q.zero_point.item()
    q(x).sum().backward()
    # d out/d z = s·(1[inside] - 1): -s for each clipped value, unscaled by g
    assert q.zero_point.grad.item() == pytest.approx(-0.5 * 2, rel=1e-6)
    opt.step()
    assert q.zero_point.item() == pytest.approx(before + 0.5, rel=1e-6)
    assert q.zero_point.item() != before


def test_forward_and_gradients_match_the_authors_transcription():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 9, generator=gen) * 2
    for signed, (lo, hi) in ((True, (-8, 7)), (False, (0, 15))):
        q = act_quantizer(bits=4, step=0.37, zero_point=-1.4, signed=signed, grad_scale=0.02)
        assert (q.level_low, q.level_high) == (lo, hi)
        xa = x.clone().requires_grad_(True)
        xb = x.clone().requires_grad_(True)
        alpha = torch.tensor([0.37], requires_grad=True)
        zp = torch.tensor([-1.4], requires_grad=True)
        ours = q(xa)
        theirs = authors_lsq_forward(xb, alpha, zp, lo, hi, 0.02)
        assert torch.equal(ours, theirs)
        ours.pow(2).sum().backward()
        theirs.pow(2).sum().backward()
        assert torch.allclose(q.step.grad, alpha.grad)
        assert torch.allclose(q.zero_point.grad, zp.grad)
        assert torch.equal(xa.grad, xb.grad)
        assert ours.unique().numel() <= 16


def test_first_batch_init_is_the_authors(vit, x):
    q = quantize_model(vit, QuantScheme(4, 4), x)
    first, second = images(4, seed=11), images(4, seed=12, scale=5.0)
    seen = {}
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.setdefault(n, a[0].clone()))
               for n, m in iter_quantizers(q) if isinstance(m, LSQActivationQuantizer)]
    with torch.no_grad():
        from maskaq_plugin.quant import quantizers_disabled
        with quantizers_disabled(q):
            q(first)
    for h in handles:
        h.remove()
    calibrate_ranges_(q, [first, second])  # only the first batch initialises
    checked = 0
    for name, m in iter_quantizers(q):
        if not isinstance(m, LSQActivationQuantizer):
            continue
        t = seen[name]
        signed = bool(t.min() < 0)
        q_p = 7 if signed else 15
        step = 2 * t.abs().mean().item() / math.sqrt(q_p)
        assert m.signed == signed
        assert m.step.item() == pytest.approx(step, rel=1e-5)
        assert m.zero_point.item() == pytest.approx(0.1 * (t.min().item() - step * q_p),
                                                    rel=1e-5, abs=1e-6)
        assert m.grad_scale.item() == pytest.approx(1 / math.sqrt(t.numel() * q_p), rel=1e-6)
        checked += 1
    assert checked == 17
    signs = {n: m.signed for n, m in iter_quantizers(q) if isinstance(m, LSQActivationQuantizer)}
    assert not signs['pre_hooks.blocks/0/attn/matmul/1__0.0']  # softmax output >= 0
    assert signs['pre_hooks.blocks/0/mlp/fc2/linear/0__0.0']  # GELU output dips below 0


def test_weight_range_follows_the_weights_after_a_step(vit, x):
    q = quantize_model(vit, QuantScheme(4, 4), x)
    quantizers = dict(iter_quantizers(q))
    wq = quantizers['pre_hooks.blocks/1/mlp/fc1/linear/0__1.0']
    assert isinstance(wq, MinMaxWeightQuantizer)
    assert not any(p.requires_grad for p in wq.parameters())  # never a learned range
    weight = q.blocks[1].mlp.fc1.weight
    opt = torch.optim.SGD([p for p in q.parameters() if p.requires_grad], lr=0.5)
    q(x).pow(2).mean().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    opt.step()
    with torch.no_grad():
        weight[3, 5] = 7.0  # a new per-channel max for channel 3
        q(x)
    absmax = weight.detach().abs().amax(1, keepdim=True)
    # NNCF's symmetric scale of the same grid: step·(2^(b-1) - 1), step = 2·max|w|/(2^b - 1)
    assert torch.allclose(wq.scale * 15 / (2 * 7), absmax, rtol=1e-6)
    assert absmax[3].item() == 7.0
    out = wq.quantize(weight.detach())
    # the released code's SymmetricQuantFunction: round(w·r) clamped, divided by r
    r = 15 / torch.clamp(2 * absmax, min=1e-8)
    assert torch.equal(out, torch.round(weight.detach() * r).clamp(-8, 7) / r)
    assert max(row.unique().numel() for row in out) <= 16


def test_weight_gradient_is_straight_through_everywhere():
    spec = PTQuantizerSpec(num_bits=3, mode=QuantizationScheme.SYMMETRIC,
                           signedness_to_force=True, narrow_range=False, half_range=False,
                           scale_shape=(2, 1), logarithm_scale=False,
                           is_quantized_on_export=True)
    wq = MinMaxWeightQuantizer(spec)
    w = torch.tensor([[1.0, -0.2, 0.97], [0.5, -0.5, 0.1]], requires_grad=True)
    out = wq(w)
    # 3 bits: step 2/7 for row 0; the top code 3·2/7 = 0.857 clips 1.0 and 0.97
    assert out[0, 0].item() == pytest.approx(3 * 2 / 7)
    (out * torch.arange(6.).view(2, 3)).sum().backward()
    assert torch.equal(w.grad, torch.arange(6.).view(2, 3))  # gradient 1, clipped or not


def test_scale_of_weights_is_exported_grid(vit, x):
    """strip_quantized folds the same values the quantizer produced."""
    from maskaq_plugin.quant import strip_quantized
    q = quantize_model(vit, QuantScheme(3, 8), x)
    with torch.no_grad():
        ref = q(x)
        stripped = strip_quantized(q, x)
        assert torch.allclose(stripped(x), ref, atol=1e-5)
    assert all(isinstance(m, LSQActivationQuantizer) for _, m in iter_quantizers(stripped))


def test_save_load_round_trip_carries_the_lsq_state(vit, x, tmp_path):
    q = quantize_model(vit, QuantScheme(4, 4), x)
    opt = torch.optim.SGD([p for p in q.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        q(x).pow(2).mean().backward()
        opt.step()
    path = tmp_path / 'q.pth'
    torch.save(save_quantized(q), path)
    restored = load_quantized(vit, torch.load(path, weights_only=True), x)
    assert restored.maskaq_scheme == QuantScheme(4, 4)
    with torch.no_grad():
        assert torch.equal(restored(x), q(x))
    a = {n: m for n, m in iter_quantizers(q)}
    for name, m in iter_quantizers(restored):
        assert type(m) is type(a[name])
        if isinstance(m, LSQActivationQuantizer):
            assert torch.equal(m.step, a[name].step)
            assert torch.equal(m.zero_point, a[name].zero_point)
            assert m.signed == a[name].signed and m.grad_scale.item() == a[name].grad_scale.item()
    assert {i.mode for i in quantizer_info(restored)} == {'lsq', 'minmax'}


def test_distributed_init_is_reduced(vit, x, tmp_path, monkeypatch):
    with two_rank_world(tmp_path, monkeypatch) as calls:
        q = quantize_model(vit, QuantScheme(4, 4), x)
    reference = quantize_model(vit, QuantScheme(4, 4), x)
    assert len(calls) == 2 * 17  # (sum of mean|x|, ranks) and min, per activation
    for (_, a), (_, b) in zip(iter_quantizers(q), iter_quantizers(reference)):
        if isinstance(a, LSQActivationQuantizer):
            assert torch.allclose(a.step, b.step) and torch.allclose(a.zero_point, b.zero_point)


def test_minmax_init_spans_the_mean_min_max_range(vit, x):
    """act_init='minmax' (ours): lowest code at the mean per-sample min, top at the max."""
    q = quantize_model(vit, QuantScheme(4, 4, act_init='minmax'), x)
    batches = [images(4, seed=21), images(4, seed=22, scale=2.0)]
    seen = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, a, n=n: seen.setdefault(n, []).append(a[0].detach().flatten(1)))
        for n, m in iter_quantizers(q) if isinstance(m, LSQActivationQuantizer)]
    from maskaq_plugin.quant import quantizers_disabled
    with torch.no_grad(), quantizers_disabled(q):
        for b in batches:
            q(b)
    for h in handles:
        h.remove()
    calibrate_ranges_(q, batches)
    for name, m in iter_quantizers(q):
        if not isinstance(m, LSQActivationQuantizer):
            continue
        assert int(m.minmax_init) == 1
        rows = torch.cat(seen[name])  # (samples, elements)
        lo, hi = rows.amin(1).mean().item(), rows.amax(1).mean().item()
        assert m.signed == bool(rows.min() < 0)
        step = (hi - lo) / (m.level_high - m.level_low)
        assert m.step.item() == pytest.approx(step, rel=1e-4)
        low, high = m.get_input_low_input_high()  # the grid, with the zero point rounded
        assert abs(low.item() - lo) <= 0.5 * step + 1e-6
        assert abs(high.item() - hi) <= 0.5 * step + 1e-6
        q_p = m.level_high
        assert m.grad_scale.item() == pytest.approx(1 / math.sqrt(seen[name][0].numel() * q_p))
    # the authors' init of the same model is another grid
    authors = quantize_model(vit, QuantScheme(4, 4), x)
    calibrate_ranges_(authors, batches)
    a = dict(iter_quantizers(authors))['pre_hooks.blocks/0/attn/matmul/1__0.0']
    b = dict(iter_quantizers(q))['pre_hooks.blocks/0/attn/matmul/1__0.0']
    assert not torch.allclose(a.step, b.step)
