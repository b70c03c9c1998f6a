"""mmpretrain ``MultiheadAttention`` (its ViT / DeiT backbones), made explicit."""
import functools

import torch.nn.functional as F

from ..explicit import register_attention_adapter
from ..recorder import emit


def mmpretrain_mha_forward(self, x):
    """Explicit ``mmpretrain.models.utils.MultiheadAttention.forward``: x (B, N, C)."""
    B, N, _ = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d)
    scores = q @ k.transpose(-2, -1)  # (B, H, N, N)
    sdpa = self.scaled_dot_product_attention
    # With qk_scale set, mmpretrain 1.2 binds its python implementation, which *divides*
    # by the bound scale; otherwise torch's SDPA multiplies by d**-0.5. Reproduce both.
    scale = 1.0 / sdpa.keywords['scale'] if isinstance(sdpa, functools.partial) \
        else self.head_dims ** -0.5
    attn = (scores * scale).softmax(dim=-1)
    if self.training and self.attn_drop > 0:
        attn = F.dropout(attn, self.attn_drop, True)
    context = attn @ v  # (B, H, N, d)
    emit(self, scores, context)
    x = context.transpose(1, 2).reshape(B, N, self.embed_dims)
    x = self.out_drop(self.gamma1(self.proj_drop(self.proj(x))))
    if self.v_shortcut:
        x = v.squeeze(1) + x
    return x


try:
    from mmpretrain.models.utils.attention import MultiheadAttention as _MMPreMHA
except Exception:  # mmpretrain missing or broken
    pass
else:
    register_attention_adapter(_MMPreMHA, mmpretrain_mha_forward)
