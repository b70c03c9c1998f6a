"""Save/restore: JSON config + tensors, ``weights_only`` loading, bit-identical outputs."""
import io
import json

import pytest
import torch
from quant_models import tiny_swin, tiny_vit

from maskaq_plugin.quant import (QuantScheme, load_quantized, quantize_model, quantizer_info,
                                 save_quantized)


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    'scheme', [QuantScheme(4, 4), QuantScheme(4, 4, recipe='nncf'),
               QuantScheme(3, 8, recipe='nncf', activation_mode='asymmetric')])
def test_round_trip_is_bit_identical_after_training(vit, x, scheme):
    q = quantize_model(vit, scheme, x)
    optimizer = torch.optim.SGD(q.parameters(), lr=0.05)
    q.train()
    for _ in range(2):  # move weights and ranges away from their initial values
        optimizer.zero_grad()
        q(x).pow(2).mean().backward()
        optimizer.step()
    q.eval()
    state = save_quantized(q)
    assert isinstance(state['nncf_config'], str)
    assert json.loads(state['nncf_config'])['compression_state']
    assert state['scheme'] == scheme.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in state['state_dict'].values())

    restored = load_quantized(tiny_vit(seed=123), _round_trip(state), x).eval()
    with torch.no_grad():
        assert torch.equal(restored(x), q(x))
    assert restored.maskaq_scheme == scheme
    assert quantizer_info(restored) == quantizer_info(q)
    assert not any(n.startswith('__nncf') for n, _ in tiny_vit().named_modules())


def test_swin_round_trip(x):
    q = quantize_model(tiny_swin(), QuantScheme(4, 4), x).eval()
    restored = load_quantized(tiny_swin(seed=9), _round_trip(save_quantized(q)), x).eval()
    with torch.no_grad():
        assert torch.equal(restored(x), q(x))


def test_restoring_into_a_differently_prepared_model_fails_loudly(vit, x):
    state = save_quantized(quantize_model(vit, QuantScheme(), x))
    with pytest.raises(RuntimeError, match=r'8 restored quantizer\(s\) never run.*'
                       'make_attention_explicit'):
        load_quantized(tiny_vit(explicit=False), state, x)
    with pytest.raises(RuntimeError, match='size mismatch|Missing key|Unexpected key'):
        load_quantized(tiny_vit(depth=1), state, x)


def test_format_is_checked(vit, x):
    with pytest.raises(ValueError, match='not a maskaq-nncf-v1 checkpoint'):
        load_quantized(vit, {'state_dict': {}}, x)
    with pytest.raises(ValueError, match='not an NNCF-wrapped model'):
        save_quantized(vit)
