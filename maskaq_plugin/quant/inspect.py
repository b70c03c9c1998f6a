"""List the fake quantizers of a quantized model and check their bit-widths.

Quantizers live in NNCF's hook storage (``qmodel.get_submodule('__nncf_hooks')``) under
names such as ``'pre_hooks.blocks/0/attn/qkv/linear/0__1.0'``: a pre-hook on input port 1
(the weight) of the operation ``blocks/0/attn/qkv/linear/0``. A model that *contains*
quantized submodules (a detector whose backbone was quantized) is searched too; names
are then prefixed with the submodule path (``'backbone:pre_hooks...'``).
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

from nncf.torch.function_hook.hook_storage import decode_hook_name
from nncf.torch.function_hook.wrapper import get_hook_storage, is_wrapped
from nncf.torch.quantization.layers import AsymmetricQuantizer, BaseQuantizer
from torch import nn

from .placement import ACTIVATION, WEIGHT, WEIGHTED_OP_TYPES, op_module_path, op_type
from .scheme import QuantScheme


@dataclass(frozen=True)
class QuantizerInfo:
    """One fake quantizer and the operation input it feeds.

    Attributes:
        name (str): Hook name (prefixed with ``'<submodule>:'`` inside a larger model).
        kind (str): ``'weight'`` or ``'activation'``.
        op (str): NNCF operation it feeds, e.g. ``'blocks/0/attn/matmul/1'``.
        op_type (str): ``'linear'``, ``'conv2d'``, ``'matmul'``, ...
        port (int): Input port of ``op`` (0/1 for matmul operands; 1 is a weight).
        scope (str): NNCF's scope of ``op`` in dotted form: the path of the module that
            runs it when every ancestor was called as ``module(...)``. NNCF drops the
            names of modules reached otherwise (``ModuleList`` loops, ``m.method(x)``),
            e.g. ``'attn.w_msa'`` for ``stages.0.blocks.1.attn.w_msa`` of an mmdet Swin.
        num_bits (int): Bit-width.
        per_channel (bool): Per-channel (weights) or per-tensor (activations).
        signed (bool): Signed range (unsigned activations use ``[0, scale]``).
        mode (str): ``'symmetric'`` or ``'asymmetric'`` (recipe ``'nncf'``), ``'lsq'``
            (activations) or ``'minmax'`` (weights) (recipe ``'lsq'``).
    """

    name: str
    kind: str
    op: str
    op_type: str
    port: int
    scope: str
    num_bits: int
    per_channel: bool
    signed: bool
    mode: str


def wrapped_submodules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(path, module)`` of every NNCF-wrapped module in ``model`` (outermost only)."""
    found = []
    for path, module in model.named_modules():
        if is_wrapped(module) and not any(path.startswith(p + '.') or p == ''
                                          for p, _ in found):
            found.append((path, module))
    return found


def iter_quantizers(model: nn.Module) -> Iterator[Tuple[str, BaseQuantizer]]:
    """Yield ``(name, quantizer)`` for every NNCF quantizer in ``model``."""
    for path, wrapped in wrapped_submodules(model):
        for name, hook in get_hook_storage(wrapped).named_hooks():
            if isinstance(hook, BaseQuantizer):
                yield (f'{path}:{name}' if path else name), hook


def _kind(op: str, port: int) -> str:
    return WEIGHT if op_type(op) in WEIGHTED_OP_TYPES and port == 1 else ACTIVATION


def _mode(q: BaseQuantizer) -> str:
    from .lsq import LSQActivationQuantizer, MinMaxWeightQuantizer
    if isinstance(q, LSQActivationQuantizer):
        return 'lsq'
    if isinstance(q, MinMaxWeightQuantizer):
        return 'minmax'
    return 'asymmetric' if isinstance(q, AsymmetricQuantizer) else 'symmetric'


def quantizer_info(model: nn.Module) -> List[QuantizerInfo]:
    """Describe every fake quantizer of ``model`` (see :class:`QuantizerInfo`)."""
    infos = []
    for name, q in iter_quantizers(model):
        _, op, port = decode_hook_name(name.split(':')[-1])
        infos.append(QuantizerInfo(
            name=name, kind=_kind(op, port), op=op, op_type=op_type(op), port=port,
            scope=op_module_path(op), num_bits=q.num_bits, per_channel=q.per_channel,
            signed=bool(q.signed),
            mode=_mode(q)))
    return infos


def quantizer_bits(model: nn.Module) -> Dict[str, Tuple[str, int]]:
    """Map each quantizer name to ``(kind, num_bits)``, kind ``'weight'``/``'activation'``."""
    return {i.name: (i.kind, i.num_bits) for i in quantizer_info(model)}


def verify_bits(model: nn.Module, scheme: QuantScheme) -> None:
    """Check that every quantizer carries the bit-width of ``scheme``.

    Raises:
        ValueError: ``model`` has no quantizer, or some quantizers differ (all listed).
    """
    infos = quantizer_info(model)
    if not infos:
        raise ValueError(f'{type(model).__name__} has no NNCF quantizer; '
                         'build it with maskaq_plugin.quant.quantize_model')
    expected = {WEIGHT: scheme.w_bits, ACTIVATION: scheme.a_bits}
    wrong = [f'{i.name} ({i.kind}): {i.num_bits} bits' for i in infos
             if i.num_bits != expected[i.kind]]
    if wrong:
        raise ValueError(f'{len(wrong)} quantizer(s) differ from {scheme.name}: '
                         + '; '.join(wrong))
