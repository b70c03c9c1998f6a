"""Taps inside an NNCF-quantized copy, and taps that do not move NNCF's quantizers.

``nncf.quantize`` with plain defaults: where quantizers go is the quant helper's business
(tests/test_quant); here only the interplay with the recorder is checked.
"""
import contextlib

import nncf
import pytest
import torch
from nncf.torch.function_hook.quantization import quantize_model as nncf_quantize_impl

from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit


@pytest.fixture
def vit_and_input(make_vit):
    # 16 px, patch 8: 4 patches + cls -> N = 5; 2 blocks, 2 heads of d = 8.
    vit = make_vit(img_size=16, embed_dim=16, num_classes=4)
    make_attention_explicit(vit)
    return vit, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _quantize(model, x):
    return nncf.quantize(model, nncf.Dataset([x]), subset_size=1)


def _quantizers(q):
    return sorted(n for n, _ in q.get_submodule('__nncf_hooks').named_modules())


def test_recording_inside_the_quantized_copy(vit_and_input):
    vit, x = vit_and_input
    q = _quantize(vit, x)
    assert any('matmul' in n for n in _quantizers(q))
    with torch.no_grad(), AttentionRecorder(vit) as rec_fp, AttentionRecorder(q) as rec_q:
        vit(x)
        q(x)
    assert [r.name for r in rec_q.records] == [r.name for r in rec_fp.records] == [
        'blocks.0.attn', 'blocks.1.attn']  # each recorder sees only its own model
    for fp, qt in zip(rec_fp.records, rec_q.records):
        assert qt.scores.shape == fp.scores.shape == (2, 2, 5, 5)
        assert qt.context.shape == fp.context.shape == (2, 2, 5, 8)
        assert qt.has_cls_token and qt.num_windows == 1
        # The copy's S and O come from quantized operands, not from the FP model.
        assert (qt.scores - fp.scores).abs().max() > 1e-4
        assert (qt.context - fp.context).abs().max() > 1e-6


def test_active_recorder_does_not_change_nncf_placement(vit_and_input, monkeypatch):
    """A recorder active on the copy NNCF traces and calibrates places the same quantizers."""
    vit, x = vit_and_input
    plain = _quantize(vit, x)

    stack, recorders = contextlib.ExitStack(), []
    deepcopy = nncf_quantize_impl.deepcopy

    def deepcopy_and_record(model, *args):  # nncf.quantize copies the model first
        copied = deepcopy(model, *args)
        recorders.append(stack.enter_context(AttentionRecorder(copied)))
        return copied

    monkeypatch.setattr(nncf_quantize_impl, 'deepcopy', deepcopy_and_record)
    with stack:
        tapped = _quantize(vit, x)
    assert len(recorders) == 1 and len(recorders[0].records) >= 2  # it did record
    assert _quantizers(tapped) == _quantizers(plain)
    sd_plain, sd_tapped = plain.state_dict(), tapped.state_dict()
    assert list(sd_tapped) == list(sd_plain)
    for key in sd_plain:
        torch.testing.assert_close(sd_tapped[key], sd_plain[key], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(tapped(x), plain(x), rtol=0, atol=0)
