"""Checks around :func:`~maskaq_plugin.quant.quantize_model`, and the errors they raise.

Two mistakes would otherwise surface late or not at all:

* an input size the model cannot take: caught by one eager forward before NNCF wraps
  and traces the model (:func:`check_runs_on`). What fails depends on the backbone
  (measured on this stack): a timm ViT built with a fixed ``img_size`` asserts on any
  other size; PVTv2 and SegFormer's MiT fail below 16 / 32 px (a patch-embedding kernel
  larger than the padded input); mmdet / mmseg Swin pads to the window and mmpretrain's
  ViT resizes its position embedding, so they run at any size;
* a scheme that quantizes nothing (no Linear / Conv in the traced graph, and no matmul or
  ``quantize_attention_matmuls=False``): training would silently fine-tune a
  full-precision model (:func:`check_quantizes_something`).
"""
import math
from collections import Counter
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

_MAX_SUGGESTIONS = 3


class QuantizationTraceError(RuntimeError):
    """NNCF could not trace the model, or would not see what the scheme quantizes."""


class InputSizeError(QuantizationTraceError, ValueError):
    """The model does not run on the example input's size (a ``ValueError`` too)."""


class NothingToQuantizeError(QuantizationTraceError, ValueError):
    """The scheme places no quantizer in the model (a ``ValueError`` too)."""


class ModuleStack:
    """Tracks the innermost running module, to name it when a forward fails."""

    def __init__(self, model: nn.Module):
        self.stack: List[str] = []
        self.handles = []
        for name, module in model.named_modules():
            self.handles.append(module.register_forward_pre_hook(
                lambda m, a, name=name: self.stack.append(name)))
            self.handles.append(module.register_forward_hook(self._pop))

    def _pop(self, module, args, output):
        if self.stack:
            self.stack.pop()

    def where(self, model: nn.Module) -> str:
        """``"module 'path' (Class)"`` of the innermost module still running."""
        path = self.stack[-1] if self.stack else ''
        cls = type(model.get_submodule(path)).__name__ if path else type(model).__name__
        return f'module {path or "<root>"!r} ({cls})'

    def remove(self):
        for h in self.handles:
            h.remove()


def call_model(model: nn.Module, example_input: Any):
    """``model(x)``, ``model(*x)`` for a tuple, ``model(**x)`` for a dict (as NNCF)."""
    if isinstance(example_input, dict):
        return model(**example_input)
    if isinstance(example_input, tuple):
        return model(*example_input)
    return model(example_input)


def _runs(model: nn.Module, x: Any) -> Optional[Tuple[str, BaseException]]:
    """None when ``model`` runs on ``x`` (eval, no grad), else (where, error)."""
    tracker = ModuleStack(model)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            call_model(model, x)
        return None
    except Exception as err:  # any failure of the user's forward
        return tracker.where(model), err
    finally:
        model.train(was_training)
        tracker.remove()


def _declared_sizes(model: nn.Module) -> List[Tuple[int, int]]:
    """``img_size`` / ``pretrain_img_size`` the model or its submodules were built for."""
    found = []
    for module in model.modules():
        for attr in ('img_size', 'pretrain_img_size'):
            value = getattr(module, attr, None)
            if isinstance(value, int):
                value = (value, value)
            if isinstance(value, Sequence) and len(value) == 2 and all(
                    isinstance(v, int) and v > 0 for v in value):
                found.append((int(value[0]), int(value[1])))
    return list(dict.fromkeys(found))


def suggest_sizes(model: nn.Module, x: torch.Tensor) -> List[Tuple[int, int]]:
    """Up to three ``(H, W)`` near ``x``'s on which ``model`` runs (tried eagerly)."""
    h, w = x.shape[-2:]
    up = [(max(32, math.ceil(h / 32) * 32), max(32, math.ceil(w / 32) * 32))]
    up.append((up[0][0] * 2, up[0][1] * 2))
    candidates = list(dict.fromkeys(_declared_sizes(model) + up + [(224, 224)]))
    good = []
    for size in candidates[:_MAX_SUGGESTIONS + 1]:
        trial = x.new_zeros(*x.shape[:-2], *size)
        if _runs(model, trial) is None:
            good.append(size)
    return good


def check_runs_on(model: nn.Module, example_input: Any) -> None:
    """Run ``model`` once on ``example_input``; raise :class:`InputSizeError` if it fails.

    The message names the model, the input shape (and the ``input_size`` it comes from),
    the module that failed with the original error, and input sizes the model does take.
    """
    failure = _runs(model, example_input)
    if failure is None:
        return
    where, err = failure
    name = type(model).__name__
    if isinstance(example_input, torch.Tensor) and example_input.dim() == 4:
        shape = tuple(example_input.shape)
        what = f'an input of shape {shape} (input_size {shape[1:]})'
        sizes = [f'{(shape[1], *s)}' for s in suggest_sizes(model, example_input)]
        fix = (f'use an input_size {name} takes, e.g. {" or ".join(sizes)} (these run; '
               'best is the size the teacher was trained at)' if sizes else
               'no nearby input size runs either: check that the model runs on its own')
        declared = _declared_sizes(model)
        if declared:
            fix += f'; {name} was built for img_size {declared[0]}'
    else:
        what = 'example_input'
        fix = 'pass an example_input the model takes (same type, shape and device)'
    message = str(err).splitlines()[0].rstrip('.') if str(err) else ''
    raise InputSizeError(f'{name} cannot run on {what}: it failed inside {where} with '
                         f'{type(err).__name__}: {message}. Fix: {fix}.') from err


def check_quantizes_something(model: nn.Module, graph, points: Sequence, scheme) -> None:
    """Raise :class:`NothingToQuantizeError` when ``points`` is empty, saying why.

    Args:
        model (nn.Module): The traced model (for its name).
        graph (NNCFGraph): Its traced graph.
        points (Sequence[QuantPoint]): The planned quantizers.
        scheme (QuantScheme): The scheme that planned them.
    """
    if points:
        return
    from .placement import MATMUL_OPS, WEIGHTED_OP_TYPES
    ops = Counter(node.node_type for node in graph.get_all_nodes()
                  if node.node_type not in ('nncf_model_input', 'nncf_model_output',
                                            'nncf_model_const'))
    matmuls = sum(1 for node in graph.get_all_nodes() if node.metatype in MATMUL_OPS)
    seen = ', '.join(f'{op} x{n}' for op, n in ops.most_common(8)) or 'none'
    excluded = (f'; its {matmuls} matmul(s) are excluded by '
                'quantize_attention_matmuls=False' if matmuls else '')
    raise NothingToQuantizeError(
        f'the scheme {scheme.name} places no quantizer in {type(model).__name__}: NNCF '
        f'traced no Linear / Conv ({", ".join(sorted(WEIGHTED_OP_TYPES))}){excluded}. '
        f'Operations traced: {seen}. Training it would fine-tune a full-precision model. '
        'Fix: quantize the module that holds the Linear / Conv layers (a model computing '
        'its projections with einsum or custom ops is not supported), or set '
        'quantize_attention_matmuls=True.')
