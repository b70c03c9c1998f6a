"""AttentionRecorder semantics, group_records, and the docstring examples."""
import copy
import doctest
import importlib
import pkgutil

import pytest
import torch

import maskaq_plugin.attention as attention
from maskaq_plugin.attention import AttentionRecorder, group_records, make_attention_explicit


def test_records_only_inside_with(make_vit):
    vit = make_vit()
    make_attention_explicit(vit)
    x = torch.randn(2, 3, 32, 32)
    rec = AttentionRecorder(vit)
    vit(x)
    assert rec.records == []
    with rec:
        vit(x)
    assert len(rec.records) == 2
    vit(x)
    assert len(rec.records) == 2
    with rec:  # re-entering starts afresh
        pass
    assert rec.records == []


def test_recorder_is_released_on_error(make_vit):
    vit = make_vit()
    make_attention_explicit(vit)
    rec = AttentionRecorder(vit)
    with pytest.raises(RuntimeError, match='boom'), rec:
        raise RuntimeError('boom')
    vit(torch.randn(1, 3, 32, 32))
    assert rec.records == []


def test_two_recorders_record_only_their_own_model(make_vit):
    vit = make_vit()
    make_attention_explicit(vit)
    twin = copy.deepcopy(vit)  # keeps explicit forwards bound to the copy
    with torch.no_grad():
        twin.blocks[0].attn.qkv.weight.mul_(2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), AttentionRecorder(vit) as rec, AttentionRecorder(twin) as rec_twin:
        vit(x)
        vit(x)
        twin(x)
    assert [r.name for r in rec.records] == ['blocks.0.attn', 'blocks.1.attn'] * 2
    assert [r.name for r in rec_twin.records] == ['blocks.0.attn', 'blocks.1.attn']
    torch.testing.assert_close(rec.records[0].scores, rec.records[2].scores)
    # Doubling q and k scales S by 4 in the copy's first layer only.
    torch.testing.assert_close(rec_twin.records[0].scores, 4 * rec.records[0].scores)


def test_nested_recorders_on_one_model_both_record(make_vit):
    vit = make_vit()
    make_attention_explicit(vit)
    with AttentionRecorder(vit) as outer:
        with AttentionRecorder(vit, detach=True) as inner:
            vit(torch.randn(1, 3, 32, 32))
    assert len(outer.records) == len(inner.records) == 2
    assert outer.records[1].scores is not inner.records[1].scores  # detached view
    assert torch.equal(outer.records[1].scores, inner.records[1].scores)


@pytest.mark.parametrize('distilled', [False, True], ids=['vit', 'deit-distilled'])
def test_detach_and_gradients_to_input(make_vit, distilled):
    if distilled:
        from timm.models.deit import VisionTransformerDistilled
        torch.manual_seed(0)
        vit = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                         num_heads=2, num_classes=10).eval()
    else:
        vit = make_vit()
    make_attention_explicit(vit)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    with AttentionRecorder(vit, detach=True) as rec:
        vit(x)
    assert all(not r.scores.requires_grad and not r.context.requires_grad for r in rec.records)
    with AttentionRecorder(vit) as rec:
        vit(x)
    last = rec.records[-1]
    assert last.scores.requires_grad and last.context.requires_grad
    (last.scores[:, :, 0, 1:].sum() + last.context.square().sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_make_attention_explicit_is_idempotent(make_vit):
    vit = make_vit()
    x = torch.randn(2, 3, 32, 32)
    first = make_attention_explicit(vit)
    forward = vit.blocks[0].attn.forward
    with torch.no_grad():
        y1 = vit(x)
    assert make_attention_explicit(vit) == first == ['blocks.0.attn', 'blocks.1.attn']
    assert vit.blocks[0].attn.forward is forward
    with torch.no_grad(), AttentionRecorder(vit) as rec:
        y2 = vit(x)
    assert torch.equal(y1, y2) and len(rec.records) == 2


def test_recorder_needs_explicit_attention(make_vit):
    with pytest.raises(ValueError, match='make_attention_explicit'):
        AttentionRecorder(make_vit())


def test_clear_forgets_records(make_vit):
    vit = make_vit()
    make_attention_explicit(vit)
    with AttentionRecorder(vit) as rec:
        vit(torch.randn(1, 3, 32, 32))
        assert len(rec.records) == 2
        rec.clear()
        assert rec.records == []
        vit(torch.randn(1, 3, 32, 32))
        assert len(rec.records) == 2


def test_num_windows_without_calling_the_recorded_model(make_swin):
    """B is taken from a shifted block's mask when the model's own forward is bypassed."""
    swin = make_swin()
    make_attention_explicit(swin)
    with AttentionRecorder(swin) as rec:
        swin.forward_features(torch.randn(2, 3, 32, 32))  # no pre-hook on `swin`
    assert [r.num_windows for r in rec.records] == [4, 4, 1, 1]
    with AttentionRecorder(swin) as rec:  # one unshifted block alone: no way to tell
        swin.layers[0].blocks[0](torch.randn(2, 8, 8, 16))
    with pytest.warns(UserWarning, match='windows per image'):
        assert rec.records[0].num_windows == 1


def _forward(model, size):
    make_attention_explicit(model)
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(2, 3, size, size))
    return rec.records


def test_group_records_vit_is_one_group(make_vit):
    groups = group_records(_forward(make_vit(depth=3), 32))
    assert [[r.name for r in g] for g in groups] == [
        ['blocks.0.attn', 'blocks.1.attn', 'blocks.2.attn']]


def test_group_records_swin_stages(make_swin):
    groups = group_records(_forward(make_swin(), 32))
    assert [[r.name for r in g] for g in groups] == [
        ['layers.0.blocks.0.attn', 'layers.0.blocks.1.attn'],
        ['layers.1.blocks.0.attn', 'layers.1.blocks.1.attn']]
    assert [g[0].group for g in groups] == [(2 * 4, 1, 16, 16, 16), (2, 2, 16, 16, 16)]


def test_group_records_pvt_stages():
    from mmdet.models.backbones import PyramidVisionTransformerV2
    torch.manual_seed(0)
    pvt = PyramidVisionTransformerV2(embed_dims=8, num_layers=[2, 2, 1, 1],
                                     num_heads=[1, 2, 2, 4], drop_path_rate=0.)
    pvt.eval()
    groups = group_records(_forward(pvt, 64))
    # 64 px: N = 16², 8², 4², 2²; keys pooled to 2·2 (sr 8, 4, 2) and 2·2 (sr 1).
    assert [[r.name.split('.')[1] for r in g] for g in groups] == [['0', '0'], ['1', '1'],
                                                                 ['2'], ['3']]
    assert [g[0].scores.shape[2:] for g in groups] == [(256, 4), (64, 4), (16, 4), (4, 4)]


def test_group_records_separates_equal_windows_with_different_heads():
    """mmseg Swin, 32 px: 4·4 and (2·2 padded to) 4·4 maps are both one window of 16
    tokens, but stages 2 and 3 have 2 and 4 heads; every group must stack."""
    from mmseg.models.backbones import SwinTransformer
    torch.manual_seed(0)
    swin = SwinTransformer(pretrain_img_size=32, embed_dims=16, depths=(2, 2, 2),
                           num_heads=(1, 2, 4), window_size=4, strides=(4, 2, 2),
                           out_indices=(0, 1, 2), drop_path_rate=0.)
    swin.eval()
    groups = group_records(_forward(swin, 32))
    assert [[r.name.split('.')[1] for r in g] for g in groups] == [['0', '0'], ['1', '1'],
                                                                 ['2', '2']]
    for g in groups:
        torch.stack([r.scores for r in g])
        torch.stack([r.context for r in g])


def test_docstring_examples_run():
    modules = [importlib.import_module(f'{attention.__name__}.{m.name}')
               for m in pkgutil.walk_packages(attention.__path__)]
    results = [doctest.testmod(m, optionflags=doctest.ELLIPSIS) for m in modules]
    assert sum(r.failed for r in results) == 0
    recorder = importlib.import_module('maskaq_plugin.attention.recorder')
    assert doctest.testmod(recorder).attempted >= 4
