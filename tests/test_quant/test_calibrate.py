"""In-place range calibration: parameters keep their identity and stay trainable.

MMEngine builds the optimizer before ``before_train`` calibrates on the first synthetic
batch (measured), so an optimizer built on the uncalibrated model must train the
calibrated ranges. These tests check recipe 'nncf' (mean min-max statistics); the
authors' recipe 'lsq' (first-batch LSQ init) is tested in test_lsq.py.
"""
import functools

import pytest
import torch
from quant_models import images, two_rank_world

from maskaq_plugin.quant import QuantScheme, calibrate_ranges_, quantize_model
from maskaq_plugin.quant.calibrate import iter_batches
from maskaq_plugin.quant.inspect import iter_quantizers

QuantScheme = functools.partial(QuantScheme, recipe='nncf')  # noqa: F811


def _quantizer_params(q):
    return {f'{n}.{p}': t for n, m in iter_quantizers(q) for p, t in m.named_parameters()}


def test_calibration_is_in_place_and_an_earlier_optimizer_trains_it(vit, x):
    q = quantize_model(vit, QuantScheme(4, 4), images(2, seed=5, scale=0.1))
    params = _quantizer_params(q)
    ids = {k: id(v) for k, v in params.items()}
    optimizer = torch.optim.SGD([p for p in q.parameters() if p.requires_grad], lr=0.1)
    before = {k: v.detach().clone() for k, v in params.items()}

    new_data = images(8, seed=6, scale=3.0)
    assert calibrate_ranges_(q, new_data) is q
    after = _quantizer_params(q)
    assert {k: id(v) for k, v in after.items()} == ids  # the very same Parameter objects
    scales = [k for k in params if k.endswith('_scale_param_storage')]
    changed = {k for k in scales if not torch.equal(before[k], after[k])}
    assert changed == {k for k in scales if '__0.' in k or 'matmul' in k}  # activations
    # Same ranges as a model quantized on that data from the start.
    fresh = _quantizer_params(quantize_model(vit, QuantScheme(4, 4), new_data))
    assert all(torch.equal(fresh[k], after[k]) for k in after)

    calibrated = {k: v.detach().clone() for k, v in after.items()}
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(q(x), torch.arange(4)).backward()
    optimizer.step()
    stepped = [k for k in scales if not torch.equal(calibrated[k], params[k])]
    assert len(stepped) > len(scales) // 2  # the optimizer moved the calibrated scales


def test_signedness_follows_the_statistics(vit, x):
    q = quantize_model(vit, QuantScheme(8, 8), x)
    signed = {n: bool(m.signed) for n, m in iter_quantizers(q)}
    assert not signed['pre_hooks.blocks/0/attn/matmul/1__0.0']  # softmax output >= 0
    assert signed['pre_hooks.blocks/0/mlp/fc2/linear/0__0.0']  # GELU output dips below 0
    assert all(v for n, v in signed.items() if n.endswith('__1.0') and 'linear' in n)


def test_weights_get_per_channel_absmax(vit, x):
    q = quantize_model(vit, QuantScheme(4, 4), x)
    quantizer = dict(iter_quantizers(q))['pre_hooks.blocks/1/mlp/fc1/linear/0__1.0']
    w = vit.blocks[1].mlp.fc1.weight
    assert torch.allclose(quantizer.scale, w.abs().amax(1, keepdim=True))


def test_batches_iterables_and_subset_size():
    batch = images(10)
    assert [b.shape[0] for b in iter_batches(batch, 4)] == [4]
    assert [b.shape[0] for b in iter_batches([batch, batch], 13)] == [10, 3]
    assert [b.shape[0] for b in iter_batches(iter([batch[:2]] * 5), 5)] == [2, 2, 1]
    assert len(list(iter_batches((batch,), 4))) == 1  # a tuple is one call's arguments


def test_only_subset_size_samples_are_used(vit, x):
    q = quantize_model(vit, QuantScheme(8, 8), x)
    calibrate_ranges_(q, torch.cat([images(2, seed=7), 50 * images(2, seed=8)]), subset_size=2)
    first = {n: m.scale.clone() for n, m in iter_quantizers(q)}
    calibrate_ranges_(q, images(2, seed=7))
    assert all(torch.equal(first[n], m.scale) for n, m in iter_quantizers(q))


def test_missing_quantizer_raises(vit, x):
    q = quantize_model(vit, QuantScheme(), x)
    q.blocks = q.blocks[:1]  # the quantizers of block 1 no longer run
    with pytest.raises(RuntimeError, match=r'12 quantizer\(s\) never ran.*blocks/1/'):
        calibrate_ranges_(q, x)


def test_distributed_statistics_are_reduced(vit, x, tmp_path, monkeypatch):
    """Under torch.distributed each rank must end with the same ranges (all-reduce)."""
    with two_rank_world(tmp_path, monkeypatch) as calls:
        q = quantize_model(vit, QuantScheme(), x)
    reference = quantize_model(vit, QuantScheme(), x)
    assert len(calls) == 4 * 17  # 4 statistics per activation quantizer
    for (_, a), (_, b) in zip(iter_quantizers(q), iter_quantizers(reference)):
        assert torch.allclose(a.scale, b.scale)  # one rank: the mean is itself
