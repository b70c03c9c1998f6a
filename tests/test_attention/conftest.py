"""Tiny, seeded models shared by the attention-tap tests (CPU, random init)."""
import pytest
import torch


@pytest.fixture
def make_vit():
    """Factory of a timm ViT: 32 px, patch 8 -> 16 patches + cls, 2 heads of d = 16."""

    def make(depth=2, seed=0, **kwargs):
        from timm.models.vision_transformer import VisionTransformer
        torch.manual_seed(seed)
        cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=depth, num_heads=2,
                   num_classes=10)
        return VisionTransformer(**{**cfg, **kwargs}).eval()

    return make


@pytest.fixture
def make_swin():
    """Factory of a timm Swin: 32 px, patch 4, window 4 -> 4 windows, then 1; heads (1, 2)."""

    def make(seed=0):
        from timm.models.swin_transformer import SwinTransformer
        torch.manual_seed(seed)
        return SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                               depths=(2, 2), num_heads=(1, 2), num_classes=10).eval()

    return make
