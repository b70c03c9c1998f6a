"""Where the fake quantizers go: MaskAQ's placement, read off NNCF's traced graph.

NNCF's own placement does not give the paper's scheme (measured on a 2-block timm ViT):
without a model type it also quantizes LayerNorm weights, residual adds, Linear outputs
and the image input, and shares one quantizer between ``q``, ``k`` and ``v`` (it
propagates them up to the ``qkv`` output); ``ModelType.TRANSFORMER`` leaves the softmax
output and ``v`` unquantized and inserts SmoothQuant. So the placement is computed here,
one quantizer per (operation, input port), and inserted as NNCF pre-hooks:

* Linear / Conv: input port 0 (activation, per tensor, ``a_bits``) and the weight port 1
  (per output channel, symmetric, ``w_bits``). The activation input is skipped when it is
  computed from the model's raw input alone (the patch embedding's image input) and
  ``keep_input_fp`` is set.
* MatMul (``@``, ``matmul``, ``bmm``) ports 0 and 1, ``addmm``/``baddbmm`` ports 1 and 2:
  both operands per tensor at ``a_bits`` (the attention matmuls ``q @ kᵀ`` and
  ``attn @ v``; a ViT backbone has no other matmuls).

Nothing else is quantized: LayerNorm, residual adds, softmax, GELU and Linear outputs
stay in full precision except where they feed one of the operations above.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Set, Tuple

import nncf
import nncf.torch.graph.operator_metatypes as om
from nncf.common.graph import NNCFGraph, NNCFNode
from torch import nn

from .scheme import QuantScheme

# metatype -> (weight port, output-channel axis of the weight)
WEIGHTED_OPS = {
    om.PTLinearMetatype: (1, 0),
    om.PTConv1dMetatype: (1, 0),
    om.PTConv2dMetatype: (1, 0),
    om.PTConv3dMetatype: (1, 0),
    om.PTConvTranspose1dMetatype: (1, 1),
    om.PTConvTranspose2dMetatype: (1, 1),
    om.PTConvTranspose3dMetatype: (1, 1),
}
# metatype -> the two matrix operands
MATMUL_OPS = {om.PTMatMulMetatype: (0, 1), om.PTAddmmMetatype: (1, 2)}
# torch function names of the weighted ops, as they appear in NNCF operation names
WEIGHTED_OP_TYPES = frozenset(fn for mt in WEIGHTED_OPS
                              for fns in mt.module_to_function_names.values() for fn in fns)
FUSED_ATTENTION_OPS = ('scaled_dot_product_attention', '_native_multi_head_attention',
                       'multi_head_attention_forward')
WEIGHT, ACTIVATION = 'weight', 'activation'


@dataclass(frozen=True)
class QuantPoint:
    """One quantizer to insert: the input ``port`` of operation ``op``.

    Attributes:
        op (str): NNCF operation name, e.g. ``'blocks/0/attn/qkv/linear/0'``.
        port (int): Input port of ``op`` that the quantizer feeds.
        kind (str): ``'weight'`` or ``'activation'``.
        scale_shape (tuple): ``(1,)`` per tensor; the weight shape with every axis but
            the output-channel one set to 1 per channel.
    """

    op: str
    port: int
    kind: str
    scale_shape: Tuple[int, ...]


def op_module_path(op: str) -> str:
    """Dotted scope of an NNCF operation: ``'blocks/0/attn/matmul/1'`` → ``'blocks.0.attn'``."""
    return '.'.join(op.split('/')[:-2]).lstrip('.')


def op_type(op: str) -> str:
    """Function name of an NNCF operation name: ``'blocks/0/attn/matmul/1'`` → ``'matmul'``."""
    return op.split('/')[-2]


def _raw_input_nodes(graph: NNCFGraph) -> Set[str]:
    """Nodes whose value depends on the model inputs only through non-quantized ops."""
    raw: Set[str] = set()
    quantized = tuple(WEIGHTED_OPS) + tuple(MATMUL_OPS)
    for node in graph.topological_sort():
        if node.metatype is om.PTInputNoopMetatype:
            raw.add(node.node_name)
            continue
        if node.metatype in quantized:
            continue
        sources = [e.from_node for e in graph.get_input_edges(node)
                   if e.from_node.metatype is not om.PTConstNoopMetatype]
        if sources and all(s.node_name in raw for s in sources):
            raw.add(node.node_name)
    return raw


def _input_edges(graph: NNCFGraph, node: NNCFNode) -> Dict[int, object]:
    return {e.input_port_id: e for e in graph.get_input_edges(node)}


def plan_quantizers(graph: NNCFGraph, scheme: QuantScheme) -> List[QuantPoint]:
    """List the quantizers of ``scheme`` for a traced model, in topological order.

    Args:
        graph (NNCFGraph): NNCF's graph of the wrapped model.
        scheme (QuantScheme): Bit-widths and placement options.

    Returns:
        list[QuantPoint]: One entry per quantized (operation, input port).
    """
    raw = _raw_input_nodes(graph) if scheme.keep_input_fp else set()
    points: List[QuantPoint] = []
    for node in graph.topological_sort():
        edges = _input_edges(graph, node)
        if node.metatype in WEIGHTED_OPS:
            w_port, axis = WEIGHTED_OPS[node.metatype]
            if 0 in edges and edges[0].from_node.node_name not in raw:
                points.append(QuantPoint(node.node_name, 0, ACTIVATION, (1,)))
            if w_port in edges:
                shape = tuple(edges[w_port].tensor_shape)
                scale_shape = tuple(s if i == axis else 1 for i, s in enumerate(shape))
                points.append(QuantPoint(node.node_name, w_port, WEIGHT, scale_shape))
        elif node.metatype in MATMUL_OPS and scheme.quantize_attention_matmuls:
            for port in MATMUL_OPS[node.metatype]:
                if port in edges:
                    points.append(QuantPoint(node.node_name, port, ACTIVATION, (1,)))
    return points


def _runs_inside(path: str, op_path: str) -> bool:
    """Whether an operation that ran in module ``op_path`` runs inside module ``path``.

    Both are full dotted paths from ``named_modules()`` (``''``: the root), so the test
    is a prefix on whole path segments: ``blocks.1`` holds ``blocks.1.attn`` but not
    ``blocks.10.attn``, and ``backbone.layers.0.attn`` does not hold ``neck.0.attn``.
    """
    return not path or op_path == path or op_path.startswith(path + '.')


@contextmanager
def recording_op_modules(model: nn.Module) -> Iterator[Dict[str, str]]:
    """Record the module that runs each operation while NNCF traces ``model``.

    NNCF's operation names do not identify the module: a scope element is appended only
    when the called module is a direct child of the module called before it, so items of
    a ``ModuleList``/``Sequential`` iterated in ``forward`` and modules whose method is
    called directly (``backbone.forward(x)``) lose their segments, index included; both
    blocks of an mmpretrain ``ImageClassifier``'s ``backbone.layers`` run their matmuls
    as ``backbone/attn/matmul/0`` .. ``/3``. NNCF names each operation from its stack of
    called module objects (``FunctionHookMode.module_call_stack``); this context wraps
    ``FunctionHookMode.get_next_op_call_name`` to record, next to each name, the full path
    of the innermost module on that stack (nncf 3.4 internals, restored on exit). Only
    modules called as ``module(...)`` are on the stack: the operations of a method called
    directly are recorded for the module that called it.

    Args:
        model (nn.Module): The (NNCF-wrapped) model about to be traced.

    Yields:
        dict[str, str]: Filled during the trace: NNCF operation name → dotted path of the
        module that ran it (``''``: the root). Only traces of ``model`` itself are recorded.
    """
    from nncf.torch.function_hook.hook_executor_mode import FunctionHookMode
    paths = {id(module): name for name, module in model.named_modules()}
    recorded: Dict[str, str] = {}
    original = FunctionHookMode.get_next_op_call_name

    def get_next_op_call_name(mode, fn_name):
        op = original(mode, fn_name)
        if getattr(mode, 'model', None) is model:
            # unregistered modules are not pushed by NNCF; skip any other unknown entry
            for module in reversed(getattr(mode, 'module_call_stack', [])):
                if id(module) in paths:
                    recorded[op] = paths[id(module)]
                    break
        return op

    FunctionHookMode.get_next_op_call_name = get_next_op_call_name
    try:
        yield recorded
    finally:
        FunctionHookMode.get_next_op_call_name = original


def find_hidden_attention(model: nn.Module, graph: NNCFGraph,
                          op_modules: Dict[str, str]) -> List[Tuple[str, str]]:
    """Attention modules whose two matmuls NNCF cannot see, as ``(path, class name)``.

    Flags every module that runs a fused attention kernel, and every module whose class
    name ends in ``Attention``/``MSA`` and that has ``num_heads`` but runs fewer than two
    matmuls between activations (e.g. a fused or einsum-based forward). Operations are
    attributed to modules by ``op_modules``, not by NNCF's scopes, which drop the
    segments of uncalled containers (see :func:`recording_op_modules`).

    Args:
        model (nn.Module): The model ``graph`` was traced from.
        graph (NNCFGraph): NNCF's graph of ``model``.
        op_modules (dict[str, str]): NNCF operation name → path of the module that ran it,
            recorded during the same trace (:func:`recording_op_modules`, or
            ``maskaq_plugin.quant.quantize.trace_graph(..., op_modules={})``).

    Returns:
        list[tuple[str, str]]: Sorted ``(module path, class name)`` pairs.

    Raises:
        ValueError: An operation of ``graph`` has no recorded module (``op_modules`` comes
            from another trace, or NNCF's naming internals changed).
    """
    modules = dict(model.named_modules())

    def module_of(node: NNCFNode) -> str:
        path = op_modules.get(node.node_name)
        if path is None:
            raise ValueError(
                f'no module recorded for NNCF operation {node.node_name!r}: pass the '
                'op_modules recorded while tracing this graph (trace_graph(model, x, '
                'op_modules={}) or recording_op_modules(model)); if it was, NNCF '
                f'{nncf.__version__} no longer names operations through '
                'FunctionHookMode.get_next_op_call_name (requirements pin nncf==3.4.0)')
        return path

    hidden = {}
    for node in graph.get_all_nodes():
        if node.node_type in FUSED_ATTENTION_OPS:
            path = module_of(node)
            hidden[path] = type(modules[path]).__name__ if path in modules else node.node_type
    const = om.PTConstNoopMetatype
    act_matmul_paths = []
    for node in graph.get_all_nodes():
        if node.metatype in MATMUL_OPS:
            edges = _input_edges(graph, node)
            if all(edges[p].from_node.metatype is not const
                   for p in MATMUL_OPS[node.metatype] if p in edges):
                act_matmul_paths.append(module_of(node))
    for path, module in modules.items():
        name = type(module).__name__
        if not (name.endswith(('Attention', 'MSA')) and hasattr(module, 'num_heads')):
            continue
        inside = sum(1 for op_path in act_matmul_paths if _runs_inside(path, op_path))
        if inside < 2:
            hidden.setdefault(path, name)
    return sorted(hidden.items())
