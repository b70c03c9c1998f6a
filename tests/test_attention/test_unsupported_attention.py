"""Backbones without supported attention get an error naming what was found and what works."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maskaq_plugin.attention import (AttentionRecorder, UnsupportedAttentionError,
                                     make_attention_explicit, supported_attention_classes)


class MyAttention(nn.Module):
    """A fused attention no adapter knows."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class MyBackbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 16)
        self.blocks = nn.Sequential(MyAttention(), MyAttention())

    def forward(self, x):  # (B, N, 3)
        return self.blocks(self.embed(x))


def test_supported_classes_cover_every_family():
    supported = supported_attention_classes()
    for name in ('timm.layers.attention.Attention',
                 'timm.models.swin_transformer.WindowAttention',
                 'mmdet.models.backbones.swin.WindowMSA', 'mmseg.models.backbones.swin.WindowMSA',
                 'mmpretrain.models.utils.attention.WindowMSA',
                 'mmpretrain.models.utils.attention.MultiheadAttention',
                 'torch.nn.modules.activation.MultiheadAttention'):
        assert name in supported


def test_custom_attention_error_names_it_and_the_supported_ones():
    with pytest.raises(UnsupportedAttentionError) as err:
        make_attention_explicit(MyBackbone())
    msg = str(err.value)
    assert 'MyBackbone' in msg and "['MyAttention']" in msg
    for name in supported_attention_classes():
        assert name in msg
    assert 'register_attention_adapter' in msg


def test_mixed_model_strict_raises_non_strict_patches_the_supported(make_vit):
    vit = make_vit()
    vit.extra = MyAttention(dim=32)  # beside the two timm blocks
    with pytest.raises(UnsupportedAttentionError, match=r"\['MyAttention'\].*strict=False"):
        make_attention_explicit(vit)
    assert not any(getattr(m, '_maskaq_explicit', False) for m in vit.modules())  # untouched
    names = make_attention_explicit(vit, strict=False)
    assert names == ['blocks.0.attn', 'blocks.1.attn']
    with torch.no_grad(), AttentionRecorder(vit) as rec:
        vit(torch.randn(1, 3, 32, 32))
        vit.extra(torch.randn(1, 5, 32))  # runs, fused and unrecorded
    assert [r.name for r in rec.records] == names


def test_model_without_attention():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(UnsupportedAttentionError, match=r'Sequential.*found: none.*Supported: '):
        make_attention_explicit(cnn)


def test_subclass_of_a_supported_class_is_not_patched_silently():
    """Adapters are keyed by exact class: a subclass may have its own forward."""
    from timm.layers import Attention

    class TweakedAttention(Attention):
        pass

    model = nn.Sequential(TweakedAttention(16, num_heads=2))
    with pytest.raises(UnsupportedAttentionError, match='TweakedAttention'):
        make_attention_explicit(model)


def test_unsupported_class_sharing_a_supported_class_name_is_reported(make_vit):
    """Another library's ``Attention`` beside timm's must not pass for the supported one."""
    vit = make_vit()
    vit.extra = type('Attention', (MyAttention,), {})(dim=32)
    with pytest.raises(UnsupportedAttentionError, match=r"\['Attention'\]"):
        make_attention_explicit(vit)


def test_attention_module_passed_directly():
    with pytest.raises(UnsupportedAttentionError, match=r"MyAttention.*\['MyAttention'\]"):
        make_attention_explicit(MyAttention())
    mha = nn.MultiheadAttention(16, 2)
    assert make_attention_explicit(mha) == ['']
