"""Record the raw attention scores S = Q·Kᵀ and the per-head context O = A·V.

The explicit attention forwards installed by :func:`make_attention_explicit` call
:func:`emit` with the tensors they computed anyway; an :class:`AttentionRecorder` that is
active and owns the calling module keeps references to them. ``emit`` runs no torch
operation, so recording never changes what NNCF traces inside a quantized scope (DESIGN.md:
an extra op there shifts NNCF's per-scope operation counters and moves quantizers).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn

# Recorders currently inside their ``with`` block (innermost last).
_ACTIVE: List['AttentionRecorder'] = []


@dataclass
class AttentionRecord:
    """One attention layer's tensors from one forward pass.

    ``scores`` and ``context`` keep the class token (when the model has one) as token 0
    and drop any further prefix tokens (distillation / register tokens), so every loss
    sees ``[cls] + patches`` or ``patches`` only.

    Attributes:
        name (str): Module path inside the recorded model.
        scores (Tensor): ``(B', H, N, Nk)`` raw Q·Kᵀ, before scale, bias, mask and softmax.
            ``B' = B * num_windows`` for window attention; ``Nk < N`` for spatial-reduction
            attention (PVT, SegFormer), whose keys are pooled tokens.
        context (Tensor): ``(B', H, N, d)`` per-head context A·V.
        has_cls_token (bool): Token 0 of the queries (and keys) is a class token.
    """

    name: str
    scores: torch.Tensor
    context: torch.Tensor
    has_cls_token: bool

    @property
    def group(self) -> tuple:
        """Key shared by equally shaped layers: ``(B', N, Nk)``."""
        b, _, n, nk = self.scores.shape
        return (b, n, nk)


@dataclass
class _Raw:
    name: str
    scores: torch.Tensor
    context: torch.Tensor
    num_prefix_tokens: int


def _drop_extra_prefix(t: torch.Tensor, num_prefix: int, dims) -> torch.Tensor:
    """Keep token 0 (class token) and the patch tokens; drop prefix tokens 1..num_prefix-1."""
    for dim in dims:
        keep = torch.cat([torch.zeros(1, dtype=torch.long),
                          torch.arange(num_prefix, t.shape[dim])]).to(t.device)
        t = t.index_select(dim, keep)
    return t


class AttentionRecorder:
    """Context manager that records every explicit attention layer of ``model``.

    Args:
        model (nn.Module): A model (or a quantized copy of one) on which
            :func:`make_attention_explicit` has been called.
        detach (bool): Detach the recorded tensors (no gradient through them).
            Defaults to False.

    Examples:
        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from maskaq_plugin.attention import AttentionRecorder, make_attention_explicit
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=10).eval()
        >>> _ = make_attention_explicit(vit)
        >>> with AttentionRecorder(vit) as rec:
        ...     _ = vit(torch.randn(2, 3, 32, 32))
        >>> [tuple(r.scores.shape) for r in rec.records]
        [(2, 2, 17, 17), (2, 2, 17, 17)]
    """

    def __init__(self, model: nn.Module, detach: bool = False):
        self._names: Dict[int, str] = {
            id(m): name for name, m in model.named_modules()
            if getattr(m, '_maskaq_explicit', False)}
        if not self._names:
            raise ValueError(
                f'{type(model).__name__} has no explicit attention to record: call '
                'maskaq_plugin.attention.make_attention_explicit(model) first (before '
                'quantizing it).')
        self.detach = detach
        self._raw: List[_Raw] = []
        self._records: Optional[List[AttentionRecord]] = None

    def __enter__(self) -> 'AttentionRecorder':
        self._raw.clear()
        self._records = None
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)

    @property
    def records(self) -> List[AttentionRecord]:
        """The recorded layers, in forward order (built on first access)."""
        if self._records is None or len(self._records) != len(self._raw):
            self._records = [self._finish(r) for r in self._raw]
        return self._records

    def _finish(self, raw: _Raw) -> AttentionRecord:
        s, o = raw.scores, raw.context
        if self.detach:
            s, o = s.detach(), o.detach()
        if raw.num_prefix_tokens > 1:
            s = _drop_extra_prefix(s, raw.num_prefix_tokens, (2, 3))
            o = _drop_extra_prefix(o, raw.num_prefix_tokens, (2,))
        return AttentionRecord(raw.name, s, o, raw.num_prefix_tokens > 0)

    def clear(self) -> None:
        """Forget what was recorded (to reuse the recorder for another forward)."""
        self._raw.clear()
        self._records = None


def emit(module: nn.Module, scores: torch.Tensor, context: torch.Tensor) -> None:
    """Hand ``scores`` (B', H, N, Nk) and ``context`` (B', H, N, d) to the active recorders.

    Called from inside explicit attention forwards; runs no torch operation.
    """
    for rec in _ACTIVE:
        name = rec._names.get(id(module))
        if name is not None:
            rec._raw.append(_Raw(name, scores, context,
                                 getattr(module, '_maskaq_prefix_tokens', 0)))


def group_records(records: List[AttentionRecord]) -> List[List[AttentionRecord]]:
    """Split records into groups of equally shaped layers (forward order kept).

    Hierarchical backbones (Swin, PVT stages) have layers that differ in token count or
    window layout; MaskAQ's mask and L_mad are computed per group and averaged over
    groups (METHOD.md, "Hierarchical backbones", ours).
    """
    groups: Dict[tuple, List[AttentionRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())
