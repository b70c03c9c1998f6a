"""Replace fused attention by explicit, recordable, quantizable attention.

Fused kernels (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``'s C++ path)
hide the attention matrix from taps and from NNCF. :func:`make_attention_explicit` swaps
the ``forward`` of each supported attention module, on the instance, for an adapter that
computes ``S = q @ kᵀ``, ``A = softmax(scale·S + bias + mask)`` and ``O = A @ v`` as plain
torch ops (NNCF then places quantizers on both operands of both matmuls) and hands S and
O to :func:`~maskaq_plugin.attention.recorder.emit`. Outputs equal the original module's
up to float rounding (tested per family within 1e-5).

Adapters are keyed by the exact class (a subclass may override ``forward``); register
more with :func:`register_attention_adapter`.
"""
import types
from typing import Callable, Dict, List, Tuple, Type

from torch import nn

_ADAPTERS: Dict[Type[nn.Module], Tuple[str, Callable]] = {}
_ATTENTION_WORDS = ('attention', 'attn', 'msa')


class UnsupportedAttentionError(TypeError):
    """Raised when a model has no attention module that MaskAQ can make explicit."""


def register_attention_adapter(cls: Type[nn.Module], forward: Callable,
                               label: str = None) -> None:
    """Register ``forward(self, *args, **kwargs)`` as the explicit forward of ``cls``.

    The adapter must return what the original forward returns and call
    ``emit(self, scores, context)`` once per call, with no extra torch op (window
    attention also passes ``num_windows``, see :func:`~.recorder.emit`).
    """
    _ADAPTERS[cls] = (label or f'{cls.__module__}.{cls.__qualname__}', forward)


def supported_attention_classes() -> List[str]:
    """Fully qualified names of the attention classes that have an adapter."""
    from . import adapters  # noqa: F401  (registers the built-in adapters)
    return sorted(label for label, _ in _ADAPTERS.values())


def _prefix_tokens(model: nn.Module, name: str) -> Tuple[int, bool]:
    """Prefix tokens seen by attention ``name``: ``(count, token 0 is a class token)``.

    Read from the nearest ancestor that defines ``num_prefix_tokens`` (timm),
    ``num_extra_tokens`` (mmpretrain) or a ``cls_token`` parameter (mmseg ViT). A class
    token, when there is one, comes first; an ancestor whose ``cls_token`` is None (timm
    ``class_token=False``) has register tokens only.
    """
    parts = name.split('.')
    for depth in range(len(parts) - 1, -1, -1):
        anc = model.get_submodule('.'.join(parts[:depth])) if depth else model
        for attr in ('num_prefix_tokens', 'num_extra_tokens'):
            num = getattr(anc, attr, None)
            if isinstance(num, int):
                return num, num > 0 and getattr(anc, 'cls_token', True) is not None
        if isinstance(getattr(anc, 'cls_token', None), nn.Parameter):
            return 1, True
    return 0, False


def _attention_like(module: nn.Module) -> bool:
    return any(w in type(module).__name__.lower() for w in _ATTENTION_WORDS)


def make_attention_explicit(model: nn.Module, strict: bool = True) -> List[str]:
    """Make every supported attention module of ``model`` explicit, in place.

    Idempotent. Call it on the full-precision model *before* quantizing or copying it:
    the quantized copy and deep copies keep the explicit forwards.

    Args:
        model (nn.Module): Any model or backbone.
        strict (bool): Raise when attention-like modules without an adapter remain
            beside supported ones. Defaults to True.

    Returns:
        list[str]: Names of the explicit attention modules, in module order.

    Raises:
        UnsupportedAttentionError: Nothing supported was found (the message names the
            attention-like classes found and the supported ones), or, with ``strict``,
            some attention-like classes have no adapter.
    """
    from . import adapters  # noqa: F401  (registers the built-in adapters)
    targets = [(n, m) for n, m in model.named_modules() if type(m) in _ADAPTERS]
    patched = [n for n, _ in targets]

    def wraps(name):  # e.g. mmcv MultiheadAttention, ShiftWindowMSA around a target
        return any(p.startswith(name + '.') if name else True for p in patched)

    unsupported = sorted({type(m).__name__ for n, m in model.named_modules()
                          if _attention_like(m) and type(m) not in _ADAPTERS
                          and not wraps(n)})
    if not patched:
        raise UnsupportedAttentionError(
            f'{type(model).__name__} has no supported attention module (attention-like '
            f'classes found: {unsupported or "none"}). Supported: '
            f'{", ".join(supported_attention_classes())}. Register an explicit forward '
            'with maskaq_plugin.attention.register_attention_adapter(cls, forward).')
    if unsupported and strict:
        raise UnsupportedAttentionError(
            f'{type(model).__name__}: attention classes {unsupported} have no adapter '
            f'(supported: {", ".join(supported_attention_classes())}); they would stay '
            'fused and unrecorded. Register an adapter, or pass strict=False to skip them.')
    for name, module in targets:
        if getattr(module, '_maskaq_explicit', False):
            continue
        module.forward = types.MethodType(_ADAPTERS[type(module)][1], module)
        module._maskaq_explicit = True
        module._maskaq_prefix_tokens, module._maskaq_cls_token = _prefix_tokens(model, name)
        if hasattr(module, 'fused_attn'):
            module.fused_attn = False
    return patched
