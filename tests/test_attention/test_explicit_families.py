"""Every supported attention family: explicit forward == original, records as configured.

Each family is a tiny random-init model (B = 2, CPU). Expected record shapes are worked
out by hand from the config: ``scores (B·nW, H, N, Nk)``, ``context (B·nW, H, N, d)``.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit

B = 2
TOL = 1e-5


@dataclass
class Family:
    build: Callable[[], nn.Module]
    img: int
    attn: str  # dotted path of the attention class that gets patched
    # (layers, windows per image, heads H, queries N, keys Nk, head dim d), per stage
    stages: Sequence[tuple]
    has_cls: bool = False
    keep: Optional[Sequence[int]] = None  # raw token indices the recorder keeps

    def layers(self):
        return [s[1:] for s in self.stages for _ in range(s[0])]


def _timm_vit(**kw):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=10, **kw)


def _timm_deit():
    from timm.models.deit import VisionTransformerDistilled
    return VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                      num_heads=2, num_classes=10)


def _timm_swin():
    from timm.models.swin_transformer import SwinTransformer
    return SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                           depths=(2, 2), num_heads=(1, 2), num_classes=10,
                           drop_path_rate=0.)


def _mm_swin(lib, img):
    backbones = importlib.import_module(f'{lib}.models.backbones')
    return backbones.SwinTransformer(pretrain_img_size=img, embed_dims=16, depths=(2, 2),
                                     num_heads=(1, 2), window_size=4, strides=(4, 2),
                                     out_indices=(0, 1), drop_path_rate=0.)


def _mmdet_pvt(version):
    from mmdet.models.backbones import PyramidVisionTransformer, PyramidVisionTransformerV2
    if version == 1:
        return PyramidVisionTransformer(pretrain_img_size=64, embed_dims=8,
                                        num_layers=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                                        drop_path_rate=0.)
    return PyramidVisionTransformerV2(embed_dims=8, num_layers=[1, 1, 1, 1],
                                      num_heads=[1, 2, 2, 4], drop_path_rate=0.)


def _mmseg_vit():
    from mmseg.models.backbones import VisionTransformer
    return VisionTransformer(img_size=32, patch_size=8, embed_dims=32, num_layers=2,
                             num_heads=2, mlp_ratio=2, out_indices=(0, 1))


def _mmseg_mit():
    from mmseg.models.backbones import MixVisionTransformer
    return MixVisionTransformer(embed_dims=8, num_layers=[1, 1, 1, 1],
                                num_heads=[1, 2, 2, 4], drop_path_rate=0.)


_MMPRE_VIT_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def _mmpretrain(name):
    backbones = importlib.import_module('mmpretrain.models.backbones')
    if name == 'SwinTransformer':
        return backbones.SwinTransformer(
            arch=dict(embed_dims=16, depths=[2, 2], num_heads=[1, 2]), img_size=32,
            window_size=4, out_indices=(0, 1), drop_path_rate=0.)
    return getattr(backbones, name)(arch=_MMPRE_VIT_ARCH, img_size=32, patch_size=8)


# ViT, 32 px, patch 8: 4·4 = 16 patches (+ prefix tokens), H = 2, d = 32 / 2.
_VIT = (2, 1, 2, 1 + 4 * 4, 1 + 4 * 4, 16)
_VIT_NO_CLS = (2, 1, 2, 4 * 4, 4 * 4, 16)
# Swin, 32 px, patch 4 -> 8·8, window 4: 4 windows of 16; merged 4·4: 1 window; d = 16.
_SWIN_32 = [(2, (8 // 4) ** 2, 1, 4 * 4, 4 * 4, 16), (2, 1, 2, 4 * 4, 4 * 4, 16)]
# Spatial reduction, 64 px, strides (4, 2, 2, 2), sr (8, 4, 2, 1), C_i = 8·H_i, d = 8:
# N = (64/4)², (64/8)², ...; keys pooled to (side/sr)² = 2·2 in every stage.
_SR_64 = [(1, 1, 1, 16 * 16, (16 // 8) ** 2, 8), (1, 1, 2, 8 * 8, (8 // 4) ** 2, 8),
          (1, 1, 2, 4 * 4, (4 // 2) ** 2, 8), (1, 1, 4, 2 * 2, 2 * 2, 8)]
_MHA = 'torch.nn.MultiheadAttention'
_CLS_NO_DIST = (0, *range(2, 18))  # distilled: [cls, dist, 16 patches] -> drop dist

FAMILIES = [
    pytest.param(Family(_timm_vit, 32, 'timm.layers.Attention', [_VIT], True), id='timm-vit'),
    pytest.param(Family(lambda: _timm_vit(class_token=False, global_pool='avg'), 32,
                        'timm.layers.Attention', [_VIT_NO_CLS]), id='timm-vit-avg'),
    pytest.param(Family(lambda: _timm_vit(class_token=False, reg_tokens=2, global_pool='avg'),
                        32, 'timm.layers.Attention', [_VIT_NO_CLS], keep=range(2, 18)),
                 id='timm-vit-reg-no-cls'),
    pytest.param(Family(_timm_deit, 32, 'timm.layers.Attention', [_VIT], True,
                        keep=_CLS_NO_DIST), id='timm-deit-distilled'),
    pytest.param(Family(_timm_swin, 32, 'timm.models.swin_transformer.WindowAttention',
                        _SWIN_32), id='timm-swin'),
    # 64 px -> 16·16: 16 windows; 8·8: 4 windows.
    pytest.param(Family(lambda: _mm_swin('mmdet', 64), 64, 'mmdet.models.backbones.swin.WindowMSA',
                        [(2, 16, 1, 16, 16, 16), (2, 4, 2, 16, 16, 16)]), id='mmdet-swin'),
    # 48 px -> 12·12: 3·3 windows; 6·6 padded to 8·8: 2·2 windows (padding path).
    pytest.param(Family(lambda: _mm_swin('mmseg', 48), 48, 'mmseg.models.backbones.swin.WindowMSA',
                        [(2, 9, 1, 16, 16, 16), (2, 4, 2, 16, 16, 16)]), id='mmseg-swin'),
    pytest.param(Family(lambda: _mmdet_pvt(1), 64, _MHA, _SR_64), id='mmdet-pvt'),
    pytest.param(Family(lambda: _mmdet_pvt(2), 64, _MHA, _SR_64), id='mmdet-pvtv2'),
    pytest.param(Family(_mmseg_vit, 32, _MHA, [_VIT], True), id='mmseg-vit'),
    pytest.param(Family(_mmseg_mit, 64, _MHA, _SR_64), id='mmseg-mit'),
    pytest.param(Family(lambda: _mmpretrain('VisionTransformer'), 32,
                        'mmpretrain.models.utils.attention.MultiheadAttention', [_VIT], True),
                 id='mmpretrain-vit'),
    pytest.param(Family(lambda: _mmpretrain('DistilledVisionTransformer'), 32,
                        'mmpretrain.models.utils.attention.MultiheadAttention', [_VIT], True,
                        keep=_CLS_NO_DIST), id='mmpretrain-deit-distilled'),
    pytest.param(Family(lambda: _mmpretrain('SwinTransformer'), 32,
                        'mmpretrain.models.utils.attention.WindowMSA', _SWIN_32),
                 id='mmpretrain-swin'),
]


def _build(family, train=False):
    torch.manual_seed(0)
    model = family.build()
    model.train(train)  # mm backbones' train() does not return self
    return model, torch.randn(B, 3, family.img, family.img)


def _tensors(out):
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return [t for o in out.values() for t in _tensors(o)] if isinstance(out, dict) else []


def _resolve(path):
    module, name = path.rsplit('.', 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train-p0'])
@pytest.mark.parametrize('family', FAMILIES)
def test_outputs_equal_original(family, train):
    model, x = _build(family, train)
    with torch.no_grad():
        ref = _tensors(model(x))  # fused / library path
        make_attention_explicit(model)
        with AttentionRecorder(model) as rec:
            tapped = _tensors(model(x))
        untapped = _tensors(model(x))
    assert rec.records and len(ref) == len(tapped) == len(untapped) > 0
    for a, b, c in zip(ref, tapped, untapped):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= TOL
        assert torch.equal(b, c)  # recording changes nothing


@pytest.mark.parametrize('family', FAMILIES)
def test_records_match_config(family):
    model, x = _build(family)
    names = make_attention_explicit(model)
    attn_cls = _resolve(family.attn)
    assert names == [n for n, m in model.named_modules() if type(m) is attn_cls]
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(x)
    expected = family.layers()
    assert [r.name for r in rec.records] == names and len(names) == len(expected)
    for r, (nw, h, n, nk, d) in zip(rec.records, expected):
        assert tuple(r.scores.shape) == (B * nw, h, n, nk), r.name
        assert tuple(r.context.shape) == (B * nw, h, n, d), r.name
        assert r.has_cls_token is family.has_cls
        assert r.num_windows == nw


def _capture(module, store):
    """Hooks keeping the projection inputs (q, k source) and the module output."""
    if isinstance(module, nn.MultiheadAttention):
        def pre(_, args, kwargs):
            store.update(zip(('query', 'key'), args))
            store.update({k: v for k, v in kwargs.items() if k in ('query', 'key')})
        out = module.register_forward_hook(lambda m, a, o: store.__setitem__('out', o[0]))
        return [module.register_forward_pre_hook(pre, with_kwargs=True), out]
    return [module.qkv.register_forward_pre_hook(lambda m, a: store.__setitem__('x', a[0])),
            module.register_forward_hook(lambda m, a, o: store.__setitem__('out', o))]


def _heads(t, h):  # (L, B, C) sequence first -> (B, H, L, d)
    return t.reshape(t.shape[0], t.shape[1], h, -1).permute(1, 2, 0, 3)


def _raw_qk(module, store):
    """q, k (B', H, N, d) from the module's own weights and captured inputs."""
    h = module.num_heads
    if isinstance(module, nn.MultiheadAttention):
        assert not module.batch_first  # mmcv transposes before calling it
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
        b_q, b_k, _ = module.in_proj_bias.chunk(3)
        return (_heads(F.linear(store['query'], w_q, b_q), h),
                _heads(F.linear(store['key'], w_k, b_k), h))
    x = store['x']  # (B', N, C)
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias)
    qkv = qkv.reshape(x.shape[0], x.shape[1], 3, h, -1).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1]


@pytest.mark.parametrize('family', FAMILIES)
def test_scores_are_raw_qk_and_context_feeds_projection(family):
    model, x = _build(family)
    names = make_attention_explicit(model)
    stores = {n: {} for n in names}
    hooks = [h for n in names for h in _capture(model.get_submodule(n), stores[n])]
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(x)
    for h in hooks:
        h.remove()
    for r in rec.records:
        module, store = model.get_submodule(r.name), stores[r.name]
        q, k = _raw_qk(module, store)
        s = q @ k.transpose(-2, -1)  # (B', H, N, Nk)
        out = store['out']
        if isinstance(module, nn.MultiheadAttention):
            out, proj = out.transpose(0, 1), module.out_proj  # (B, N, C)
        else:
            proj = module.proj
        if family.keep is not None:
            keep = torch.tensor(list(family.keep))
            s, out = s[:, :, keep][:, :, :, keep], out[:, keep]
        torch.testing.assert_close(r.scores, s, rtol=TOL, atol=TOL)
        b, h, n, d = r.context.shape
        torch.testing.assert_close(proj(r.context.transpose(1, 2).reshape(b, n, h * d)), out,
                                   rtol=TOL, atol=TOL)
