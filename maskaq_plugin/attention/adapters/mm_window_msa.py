"""OpenMMLab Swin ``WindowMSA`` (mmdet, mmseg, mmpretrain), made explicit.

The three libraries ship identical copies of this module.
"""
from ..explicit import register_attention_adapter
from ..recorder import emit


def window_msa_forward(self, x, mask=None):
    """Explicit ``WindowMSA.forward``: x (num_windows*B, N, C), mask (nW, N, N) or None."""
    B_, N, C = x.shape
    qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B_, H, N, d)
    scores = q @ k.transpose(-2, -1)  # (B_, H, N, N) raw S
    wh, ww = self.window_size
    bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
        wh * ww, wh * ww, -1).permute(2, 0, 1).contiguous()  # (H, N, N)
    attn = scores * self.scale + bias.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.num_heads, N, N)
    attn = self.attn_drop(self.softmax(attn))
    context = attn @ v  # (B_, H, N, d)
    emit(self, scores, context, num_windows=0 if mask is None else mask.shape[0])
    x = self.proj(context.transpose(1, 2).reshape(B_, N, C))
    return self.proj_drop(x)


for _path in ('mmdet.models.backbones.swin', 'mmseg.models.backbones.swin',
              'mmpretrain.models.utils.attention'):
    try:
        _mod = __import__(_path, fromlist=['WindowMSA'])
    except Exception:  # library missing or broken: its family is simply not offered
        continue
    register_attention_adapter(_mod.WindowMSA, window_msa_forward)
