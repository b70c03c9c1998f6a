"""Single attention modules: masks and options the tiny backbones do not exercise."""
import copy

import pytest
import torch
from torch import nn

from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit

TOL = 1e-5


def _explicit_copy(module):
    patched = copy.deepcopy(module)
    make_attention_explicit(patched)
    return patched


@pytest.mark.parametrize('batch_first', [False, True])
@pytest.mark.parametrize('kdim', [None, 12])
def test_torch_mha_masks_and_weights(batch_first, kdim):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, kdim=kdim, vdim=kdim, batch_first=batch_first).eval()
    explicit = _explicit_copy(mha)
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, kdim or 16)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -2:] = True
    cases = [dict(), dict(key_padding_mask=pad, need_weights=False),
             dict(attn_mask=torch.rand(5, 7) > 0.7, key_padding_mask=pad),
             dict(attn_mask=torch.randn(2 * 4, 5, 7), average_attn_weights=False)]
    for kwargs in cases:
        with torch.no_grad():
            want = mha(q, kv, kv, **kwargs)
            with AttentionRecorder(explicit) as rec:
                got = explicit(q, kv, kv, **kwargs)
        assert len(rec.records) == 1 and rec.records[0].scores.shape == (2, 4, 5, 7)
        for a, b in zip(want, got):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, rtol=TOL, atol=TOL)


def test_timm_attention_masks_and_causal():
    from timm.layers import Attention
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2).eval()
    explicit = _explicit_copy(attn)
    assert explicit.fused_attn is False
    x = torch.randn(2, 6, 16)
    bool_mask = torch.rand(2, 1, 6, 6) > 0.3
    bool_mask[..., 0] = True  # no fully masked row
    for kwargs in (dict(attn_mask=bool_mask), dict(attn_mask=torch.randn(2, 2, 6, 6)),
                   dict(is_causal=True)):
        with torch.no_grad():
            torch.testing.assert_close(explicit(x, **kwargs), attn(x, **kwargs),
                                       rtol=TOL, atol=TOL)


@pytest.mark.parametrize('kwargs', [dict(num_heads=2, qk_scale=1.0, layer_scale_init_value=0.5),
                                    dict(num_heads=1, v_shortcut=True)],
                         ids=['qk-scale-layer-scale', 'v-shortcut'])
def test_mmpretrain_attention_options(kwargs):
    from mmpretrain.models.utils.attention import MultiheadAttention
    torch.manual_seed(0)
    attn = MultiheadAttention(embed_dims=16, **kwargs)
    attn.eval()
    explicit = _explicit_copy(attn)
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), attn(x), rtol=TOL, atol=TOL)
