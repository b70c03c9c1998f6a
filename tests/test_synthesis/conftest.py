"""Tiny, seeded models for the synthesis tests (CPU, random init)."""
import pytest
import torch

from maskaq_plugin.attention import make_attention_explicit


@pytest.fixture
def make_vit():
    """timm ViT (explicit attention): 32 px, patch 8 -> 16 patches + cls, 2 heads."""

    def make(seed=0, **kwargs):
        from timm.models.vision_transformer import VisionTransformer
        torch.manual_seed(seed)
        cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                   num_classes=10)
        vit = VisionTransformer(**{**cfg, **kwargs}).eval()
        make_attention_explicit(vit)
        return vit

    return make


@pytest.fixture
def make_swin():
    """timm Swin (explicit attention): 32 px, patch 4, window 4 -> stages of 4 and 1 windows."""

    def make(seed=0):
        from timm.models.swin_transformer import SwinTransformer
        torch.manual_seed(seed)
        swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                               depths=(2, 2), num_heads=(2, 2), num_classes=10).eval()
        make_attention_explicit(swin)
        return swin

    return make
