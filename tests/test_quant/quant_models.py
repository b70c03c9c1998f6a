"""Tiny, seeded models and inputs for the quantization tests (CPU, random init).

A uniquely named module (not ``conftest``): several test folders have a conftest.py.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from maskaq_plugin.attention import make_attention_explicit

SCHEMES = [(8, 8), (4, 8), (4, 4), (3, 3)]


def tiny_vit(depth=2, seed=0, explicit=True):
    """timm ViT: 32 px, patch 8 -> 16 patches + cls token, width 32, 2 heads."""
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=depth,
                              num_heads=2, num_classes=10).eval()
    if explicit:
        make_attention_explicit(model)
    return model


def tiny_swin(seed=0):
    """timm Swin: 32 px, patch 4, window 4 (4 windows, then 1), heads (1, 2)."""
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(seed)
    model = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                            depths=(1, 1), num_heads=(1, 2), num_classes=10).eval()
    make_attention_explicit(model)
    return model


class TinyMHA(nn.Module):
    """Conv patch embedding, one ``nn.MultiheadAttention`` block and a linear head."""

    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 8, 8)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        h = self.norm(tokens)
        tokens = tokens + self.attn(h, h, h, need_weights=False)[0]
        return self.head(tokens.mean(1))


def images(n=4, seed=1, scale=1.0):
    """Seeded N(0, scale²) images, (n, 3, 32, 32)."""
    return scale * torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@contextmanager
def two_rank_world(tmp_path, monkeypatch):
    """A one-process gloo group that reports two ranks; yields the list that counts the
    ``all_reduce`` calls made inside the block (the group is destroyed afterwards)."""
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    calls, real = [], dist.all_reduce
    try:
        with monkeypatch.context() as patch:
            patch.setattr(dist, 'get_world_size', lambda *a: 2)
            patch.setattr(dist, 'all_reduce', lambda t, **kw: calls.append(1) or real(t, **kw))
            yield calls
    finally:
        dist.destroy_process_group()
