"""``torch.nn.MultiheadAttention``, made explicit.

Covers every OpenMMLab backbone built on mmcv's ``MultiheadAttention`` wrapper: mmseg
``VisionTransformer``, mmdet ``PyramidVisionTransformer(V2)`` (spatial-reduction attention)
and mmseg ``MixVisionTransformer`` (SegFormer's efficient attention). For spatial-reduction
attention the keys are pooled tokens, so the recorded scores are ``(B, H, N, Nk)`` with
``Nk < N``; see ``maskaq_plugin.losses.functional`` for the axis each loss reduces over.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..explicit import register_attention_adapter
from ..recorder import emit


def _check_supported(self):
    if self.bias_k is not None or self.add_zero_attn:
        raise NotImplementedError(
            'nn.MultiheadAttention with add_bias_kv=True or add_zero_attn=True has no '
            'explicit MaskAQ adapter; build it with the defaults (False).')


def torch_mha_forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                      attn_mask=None, average_attn_weights=True, is_causal=False):
    """Explicit ``nn.MultiheadAttention.forward`` (same arguments and returns)."""
    _check_supported(self)
    if self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    N, B, E = query.shape  # (N, B, E) sequence first from here on
    Nk = key.shape[0]
    H, d = self.num_heads, self.head_dim
    if self._qkv_same_embed_dim:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
    b_q = b_k = b_v = None
    if self.in_proj_bias is not None:
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).reshape(N, B, H, d).permute(1, 2, 0, 3)  # (B, H, N, d)
    k = F.linear(key, w_k, b_k).reshape(Nk, B, H, d).permute(1, 2, 0, 3)  # (B, H, Nk, d)
    v = F.linear(value, w_v, b_v).reshape(Nk, B, H, d).permute(1, 2, 0, 3)
    scores = q @ k.transpose(-2, -1)  # (B, H, N, Nk) raw S
    attn = scores * d ** -0.5
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(N, Nk, dtype=torch.bool, device=query.device).triu(1)
    if attn_mask is not None:
        attn_mask = attn_mask.view(B, H, N, Nk) if attn_mask.dim() == 3 else attn_mask
        attn = attn.masked_fill(attn_mask, float('-inf')) if attn_mask.dtype == torch.bool \
            else attn + attn_mask
    if key_padding_mask is not None:
        pad = key_padding_mask.view(B, 1, 1, Nk)
        attn = attn.masked_fill(pad, float('-inf')) if pad.dtype == torch.bool else attn + pad
    attn = attn.softmax(dim=-1)
    attn_used = F.dropout(attn, self.dropout, True) if self.training and self.dropout > 0 \
        else attn
    context = attn_used @ v  # (B, H, N, d)
    emit(self, scores, context)
    out = context.permute(2, 0, 1, 3).reshape(N, B, E)
    out = F.linear(out, self.out_proj.weight, self.out_proj.bias)
    if self.batch_first:
        out = out.transpose(0, 1)
    if not need_weights:
        return out, None
    # Like torch, the returned weights are those applied to v (after dropout).
    return out, attn_used.mean(dim=1) if average_attn_weights else attn_used


register_attention_adapter(nn.MultiheadAttention, torch_mha_forward)
