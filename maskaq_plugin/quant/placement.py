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
from dataclasses import dataclass
from typing import Dict, List, Set, Tuple

import nncf.torch.graph.operator_metatypes as om
from nncf.common.graph import NNCFGraph, NNCFNode

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


def nncf_scope(model, path: str) -> str:
    """The scope NNCF gives module ``path`` in operation names, ``'.'``-separated.

    NNCF names a module relative to the module that *called* it; containers that are
    never called (``ModuleList``, ``ModuleDict``) break the chain, so neither they nor
    their items appear: mmdet/mmseg Swin's ``stages.0.blocks.0.attn.w_msa`` is traced as
    ``attn/w_msa``. Several modules may share one scope.
    """
    from torch import nn
    containers = (nn.ModuleList, nn.ModuleDict)
    parts, parent = [], model
    for name in path.split('.') if path else []:
        child = parent[int(name)] if isinstance(parent, nn.ModuleList) else getattr(parent, name)
        if not isinstance(parent, containers) and not isinstance(child, containers):
            parts.append(name)
        parent = child
    return '.'.join(parts)


def _in_scope(path: str, scope: str) -> bool:
    """Whether an operation in NNCF scope ``scope`` runs inside module ``path``.

    NNCF names scopes after the modules *called* on the way (``module(...)``): a module
    whose method is called directly (``vit.forward_features(x)``) and the containers it
    calls are missing from the scope, so a tail of ``path`` is matched too.
    """
    if not path:
        return True
    parts = path.split('.')
    return any(scope == tail or scope.startswith(tail + '.')
               for tail in ('.'.join(parts[i:]) for i in range(len(parts))))


def find_hidden_attention(model, graph: NNCFGraph) -> List[Tuple[str, str]]:
    """Attention modules whose two matmuls NNCF cannot see, as ``(path, class name)``.

    Flags every scope that runs a fused attention kernel, and every module whose class
    name ends in ``Attention``/``MSA`` and that has ``num_heads`` but runs fewer than two
    matmuls between activations (e.g. a fused or einsum-based forward).
    """
    modules = dict(model.named_modules())
    hidden = {}
    for node in graph.get_all_nodes():
        if node.node_type in FUSED_ATTENTION_OPS:
            scope = op_module_path(node.node_name)
            module = modules.get(scope)
            hidden[scope] = type(module).__name__ if module is not None else node.node_type
    const = om.PTConstNoopMetatype
    act_matmul_scopes = []
    for node in graph.get_all_nodes():
        if node.metatype in MATMUL_OPS:
            edges = _input_edges(graph, node)
            if all(edges[p].from_node.metatype is not const
                   for p in MATMUL_OPS[node.metatype] if p in edges):
                act_matmul_scopes.append(op_module_path(node.node_name))
    for path, module in modules.items():
        name = type(module).__name__
        if not (name.endswith(('Attention', 'MSA')) and hasattr(module, 'num_heads')):
            continue
        inside = sum(1 for scope in act_matmul_scopes if _in_scope(path, scope))
        if inside < 2:
            hidden.setdefault(path, name)
    return sorted(hidden.items())
