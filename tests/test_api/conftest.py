"""Tiny, seeded models for the API tests (CPU)."""
import pytest
import torch


@pytest.fixture
def make_vit():
    """timm ViT: 32 px, patch 8 -> 16 patches + cls, 2 heads, 10 classes, random init."""

    def make(seed=0):
        from timm.models.vision_transformer import VisionTransformer
        torch.manual_seed(seed)
        return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                 num_heads=2, num_classes=10).eval()

    return make
