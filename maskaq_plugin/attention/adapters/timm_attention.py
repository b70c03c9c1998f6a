"""timm ``Attention`` (ViT, DeiT) and ``WindowAttention`` (Swin), made explicit."""
import torch

from ..explicit import register_attention_adapter
from ..recorder import emit


def timm_attention_forward(self, x, attn_mask=None, is_causal=False):
    """Explicit ``timm.layers.Attention.forward`` (q·kᵀ is scaled after it is recorded)."""
    B, N, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, 'gate', None) is not None else None
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, H, N, d)
    q, k = self.q_norm(q), self.k_norm(k)
    scores = q @ k.transpose(-2, -1)  # (B, H, N, N) raw S
    attn = scores * self.scale
    if is_causal:
        causal = torch.ones(N, N, dtype=torch.bool, device=x.device).triu(1)
        attn = attn.masked_fill(causal, float('-inf'))
    if attn_mask is not None:
        attn = attn.masked_fill(~attn_mask, float('-inf')) if attn_mask.dtype == torch.bool \
            else attn + attn_mask
    attn = self.attn_drop(attn.softmax(dim=-1))
    context = attn @ v  # (B, H, N, d)
    emit(self, scores, context)
    x = context.transpose(1, 2).reshape(B, N, self.attn_dim)
    x = self.norm(x)
    if gate is not None:
        x = x * gate
    return self.proj_drop(self.proj(x))


def timm_window_attention_forward(self, x, mask=None):
    """Explicit ``timm.models.swin_transformer.WindowAttention.forward``."""
    B_, N, _ = x.shape  # B_ = B * num_windows
    qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B_, H, N, d)
    scores = q @ k.transpose(-2, -1)  # (B_, H, N, N)
    attn = scores * self.scale + self._get_rel_pos_bias()
    if mask is not None:
        num_win = mask.shape[0]
        attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.num_heads, N, N)
    attn = self.attn_drop(self.softmax(attn))
    context = attn @ v  # (B_, H, N, d)
    emit(self, scores, context, num_windows=0 if mask is None else mask.shape[0])
    x = context.transpose(1, 2).reshape(B_, N, -1)
    return self.proj_drop(self.proj(x))


try:
    from timm.layers import Attention as _TimmAttention
    from timm.models.swin_transformer import WindowAttention as _TimmWindowAttention
except ImportError:  # timm not installed
    pass
else:
    register_attention_adapter(_TimmAttention, timm_attention_forward)
    register_attention_adapter(_TimmWindowAttention, timm_window_attention_forward)
