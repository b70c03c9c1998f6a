"""Record the raw attention scores S = Q·Kᵀ and the per-head context O = A·V.

The explicit attention forwards installed by :func:`make_attention_explicit` call
:func:`emit` with the tensors they computed anyway; an :class:`AttentionRecorder` that is
active and owns the calling module keeps references to them. ``emit`` runs no torch
operation, so recording never changes what NNCF traces inside a quantized scope
(docs/architecture.md: an extra op there shifts NNCF's per-scope operation counters and
moves quantizers).
"""
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

# Recorders currently inside their ``with`` block (innermost last).
_ACTIVE: List['AttentionRecorder'] = []


@dataclass
class AttentionRecord:
    """One attention layer's tensors from one forward pass.

    ``scores`` and ``context`` keep the class token (when the model has one) as token 0
    and drop every other prefix token (distillation / register tokens), so every loss
    sees ``[cls] + patches`` or ``patches`` only.

    Attributes:
        name (str): Module path inside the recorded model.
        scores (Tensor): ``(B', H, N, Nk)`` raw Q·Kᵀ, before scale, bias, mask and softmax.
            ``B' = B * num_windows`` for window attention; ``Nk < N`` for spatial-reduction
            attention (PVT, SegFormer), whose keys are pooled tokens.
        context (Tensor): ``(B', H, N, d)`` per-head context A·V.
        has_cls_token (bool): Token 0 of the queries (and keys) is a class token.
        num_windows (int): Windows per image; 1 for global attention.
    """

    name: str
    scores: torch.Tensor
    context: torch.Tensor
    has_cls_token: bool
    num_windows: int = 1

    @property
    def group(self) -> tuple:
        """Key shared by layers whose tensors stack: ``(B', H, N, Nk, d)``.

        Heads are part of the key: Swin stages padded to one window can share
        ``(B', N, Nk)`` and still differ in ``H``.
        """
        return (*self.scores.shape, self.context.shape[-1])


@dataclass
class _Raw:
    name: str
    scores: torch.Tensor
    context: torch.Tensor
    num_prefix_tokens: int
    has_cls_token: bool
    num_windows: Optional[int]  # None: global; 0: windowed, count unknown
    batch: Optional[int]  # leading dim of the recorded model's input, when it was called


def _drop_prefix(t: torch.Tensor, num_prefix: int, keep_cls: bool, dims) -> torch.Tensor:
    """Keep the class token (token 0, if ``keep_cls``) and the patch tokens."""
    for dim in dims:
        keep = torch.arange(num_prefix, t.shape[dim], device=t.device)
        if keep_cls:
            keep = torch.cat([keep.new_zeros(1), keep])
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
        self._model = model
        self._raw: List[_Raw] = []
        self._records: Optional[List[AttentionRecord]] = None
        self._batch: Optional[int] = None
        self._hook = None

    def __enter__(self) -> 'AttentionRecorder':
        self.clear()
        self._batch = None
        # Batch size of each call of the recorded model: B' // B windows per image.
        self._hook = self._model.register_forward_pre_hook(self._note_batch,
                                                           with_kwargs=True)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        self._hook.remove()

    def _note_batch(self, module, args, kwargs) -> None:
        x = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
        self._batch = None if x is None else x.shape[0]

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
        if raw.num_prefix_tokens > int(raw.has_cls_token):
            s = _drop_prefix(s, raw.num_prefix_tokens, raw.has_cls_token, (2, 3))
            o = _drop_prefix(o, raw.num_prefix_tokens, raw.has_cls_token, (2,))
        return AttentionRecord(raw.name, s, o, raw.has_cls_token, self._num_windows(raw))

    def _num_windows(self, raw: _Raw) -> int:
        """Windows per image: from the shift mask, else ``B' // B``."""
        if raw.num_windows is None:
            return 1
        if raw.num_windows > 0:
            return raw.num_windows
        # Unshifted window block: B from the model's input, or from a shifted sibling.
        batch = raw.batch or next(
            (r.scores.shape[0] // r.num_windows for r in self._raw if r.num_windows), None)
        if not batch:
            warnings.warn(f'AttentionRecorder: cannot tell the windows per image of '
                          f'`{raw.name}` (the recorded model itself was not called); '
                          'num_windows is set to 1.')
            return 1
        return raw.scores.shape[0] // batch

    def clear(self) -> None:
        """Forget what was recorded (to reuse the recorder for another forward)."""
        self._raw.clear()
        self._records = None


def emit(module: nn.Module, scores: torch.Tensor, context: torch.Tensor,
         num_windows: Optional[int] = None) -> None:
    """Hand ``scores`` (B', H, N, Nk) and ``context`` (B', H, N, d) to the active recorders.

    Called from inside explicit attention forwards; runs no torch operation.

    Args:
        num_windows (int, optional): None for global attention; for window attention
            the windows per image when known (the shift mask's first dim), else 0.
    """
    for rec in _ACTIVE:
        name = rec._names.get(id(module))
        if name is not None:
            rec._raw.append(_Raw(name, scores, context,
                                 getattr(module, '_maskaq_prefix_tokens', 0),
                                 getattr(module, '_maskaq_cls_token', False),
                                 num_windows, rec._batch))


def group_records(records: List[AttentionRecord]) -> List[List[AttentionRecord]]:
    """Split records into groups of equally shaped layers (forward order kept).

    Hierarchical backbones (Swin, PVT stages) have layers that differ in token count or
    window layout; MaskAQ's mask and L_mad are computed per group and averaged over
    groups (docs/method.md, "Hierarchical backbones", ours).
    """
    groups: Dict[tuple, List[AttentionRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())
