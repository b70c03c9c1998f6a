"""The integer weights of an OpenVINO IR, read back and compared code for code with torch.

**What OpenVINO stores** (measured, openvino 2026.4.1, both recipes, 3 to 8 bits):
``openvino.convert_model`` itself (before ``save_model``, no option involved) folds every
``FakeQuantize`` whose data input is a constant into an integer constant and a
decompression subgraph ``Constant(i4 | i8) → Convert(f32) → Multiply(scale)`` (no
``Subtract``: the weight grids are symmetric). ``i4`` holds weights of at most 16 levels
(W4 and W3 students; a 3-bit code fills a 4-bit slot), ``i8`` the rest. So
:func:`~maskaq_plugin.quant.export_openvino` already deploys a W4A8 or W4A4 student with
4-bit weights; the ``.bin`` of a W4 IR is about half that of the W8 IR of the same model
(biases, LayerNorms and per-channel scales stay f32).

OpenVINO computes those codes from the FakeQuantize's range, not from our quantizer.
:func:`compare_ir_weights` checks that they are ours: it records what every torch weight
quantizer produced (``w_q``, on the grid ``k·step``), derives our integer codes
``k = round(w_q / step)`` and matches each to the IR constant whose dequantized values
equal ``w_q`` (same shape). Measured: every code equal, dequantized weights within
1 ulp-scale float error (≤ 1e-8 on weights of magnitude ~0.1).
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from nncf.torch.quantization.layers import SymmetricQuantizer
from torch import nn

from .inspect import iter_quantizers, quantizer_info

WEIGHTED_OPS = ('MatMul', 'Convolution')
_PASS_THROUGH = ('Convert', 'Subtract', 'Multiply')


@dataclass
class IRWeight:
    """The weight input (port 1) of one MatMul / Convolution of an OpenVINO model.

    Attributes:
        op (str): Friendly name of the consuming operation.
        element_type (str): Type of the stored constant: ``'i4'``, ``'u4'``, ``'i8'``,
            ``'u8'``, ``'f32'`` ...
        stored (np.ndarray): The stored values (unpacked integer codes, or floats).
        scale (np.ndarray, optional): The ``Multiply`` of the decompression subgraph.
        zero_point (np.ndarray, optional): The ``Subtract`` of it, if any.
    """

    op: str
    element_type: str
    stored: np.ndarray
    scale: Optional[np.ndarray] = None
    zero_point: Optional[np.ndarray] = None

    @property
    def codes(self) -> np.ndarray:
        """Integer codes relative to the zero point (``stored − zero_point``)."""
        zp = 0 if self.zero_point is None else self.zero_point
        return self.stored.astype(np.int64) - np.asarray(zp).astype(np.int64)

    def dequantized(self) -> np.ndarray:
        """The float weight the decompression subgraph computes (f32)."""
        if self.scale is None:
            return self.stored.astype(np.float32)
        zp = np.float32(0) if self.zero_point is None else self.zero_point.astype(np.float32)
        return (self.stored.astype(np.float32) - zp) * self.scale.astype(np.float32)


def _constant_values(const) -> np.ndarray:
    kind = const.get_output_element_type(0).get_type_name()
    data = np.asarray(const.get_data())
    if kind not in ('i4', 'u4'):
        return data
    shape = tuple(const.shape)
    packed = data.view(np.uint8).reshape(-1)  # two codes a byte, the first in the low nibble
    nibbles = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:int(np.prod(shape))]
    nibbles = nibbles.astype(np.int8)
    if kind == 'i4':
        nibbles = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    return nibbles.reshape(shape)


def _input_constant(op, port: int):
    """The Constant behind ``op``'s input ``port``, or None (e.g. an activation)."""
    node = op.input_value(port).get_node()
    return node if node.get_type_name() == 'Constant' else None


def ir_weights(ov_model) -> List[IRWeight]:
    """Every MatMul / Convolution weight of ``ov_model`` that is (decompressed from) a
    constant, in graph order; activation × activation MatMuls are skipped."""
    found = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        node, parts = op.input_value(1).get_node(), {}
        while node.get_type_name() in _PASS_THROUGH:
            kind = node.get_type_name()
            if kind != 'Convert':
                const = _input_constant(node, 1)
                if const is None:
                    break
                parts['scale' if kind == 'Multiply' else 'zero_point'] = const
            node = node.input_value(0).get_node()
        if node.get_type_name() != 'Constant':
            continue
        found.append(IRWeight(
            op=op.get_friendly_name(),
            element_type=node.get_output_element_type(0).get_type_name(),
            stored=_constant_values(node),
            **{k: _constant_values(c).astype(np.float32) for k, c in parts.items()}))
    return found


@dataclass
class TorchWeight:
    """What one weight quantizer produced in the torch fake-quant model.

    Attributes:
        name (str): Quantizer name (:func:`~maskaq_plugin.quant.quantizer_info`).
        num_bits (int): Its bit-width.
        values (np.ndarray): The fake-quantized weight ``w_q`` (f32).
        codes (np.ndarray): ``round(w_q / step)``, in the quantizer's integer range.
        step (np.ndarray): The grid step, per output channel (broadcastable).
    """

    name: str
    num_bits: int
    values: np.ndarray
    codes: np.ndarray
    step: np.ndarray


@torch.no_grad()
def torch_weights(qmodel: nn.Module, example_input: Any) -> List[TorchWeight]:
    """Run ``qmodel`` once and record every weight quantizer's output and integer codes.

    Works for computed weights too (the quantizer's input, whatever produced it).

    Raises:
        ValueError: A weight quantizer is not symmetric (no integer grid ``k·step``), or
            its output is not on its grid.
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    infos = {i.name: i for i in quantizer_info(qmodel) if i.kind == 'weight'}
    outputs, handles = {}, []
    for name, q in iter_quantizers(qmodel):
        if name in infos:
            handles.append(q.register_forward_hook(
                lambda _, __, out, name=name: outputs.__setitem__(name, out.detach())))
    try:
        qmodel(*args)
    finally:
        for h in handles:
            h.remove()
    quantizers = dict(iter_quantizers(qmodel))
    found = []
    for name, w_q in outputs.items():
        q = quantizers[name]
        if not isinstance(q, SymmetricQuantizer):
            raise ValueError(f'weight quantizer {name} is {type(q).__name__}; integer '
                             'weight codes need a symmetric quantizer')
        step = q.scale.detach().abs() / q.level_high
        codes = torch.round(w_q / step)
        off_grid = (codes * step - w_q).abs().max().item() if w_q.numel() else 0.0
        if codes.min() < q.level_low or codes.max() > q.level_high or \
                off_grid > 1e-4 * step.max().item():
            raise ValueError(f'weight quantizer {name}: output off its grid '
                             f'(codes {codes.min():.0f}..{codes.max():.0f}, '
                             f'error {off_grid:.3g})')
        found.append(TorchWeight(name, q.num_bits, w_q.cpu().numpy(),
                                 codes.cpu().numpy().astype(np.int64),
                                 step.cpu().numpy().astype(np.float32)))
    return found


def storage_type(num_bits: int) -> str:
    """OpenVINO element type a symmetric ``num_bits`` weight is stored in."""
    return 'i4' if num_bits <= 4 else 'i8'


@dataclass
class WeightReport:
    """Result of :func:`compare_ir_weights`.

    Attributes:
        matched (dict): Quantizer name → the IR operation its weight feeds.
        element_types (dict): Quantizer name → stored element type.
        code_mismatches (int): Weight elements whose IR code differs from ours.
        max_abs_error (float): Largest |dequantized IR weight − torch ``w_q``|.
        problems (list): Human-readable failures (empty: the IR stores our codes).
    """

    matched: Dict[str, str] = field(default_factory=dict)
    element_types: Dict[str, str] = field(default_factory=dict)
    code_mismatches: int = 0
    max_abs_error: float = 0.0
    problems: List[str] = field(default_factory=list)


def _aligned(ir: IRWeight, shape) -> Optional[np.ndarray]:
    deq = ir.dequantized()
    if deq.shape == tuple(shape):
        return deq
    if deq.ndim == 2 and deq.T.shape == tuple(shape):
        return deq.T
    return None


def compare_ir_weights(ov_model, qmodel: nn.Module, example_input: Any,
                       atol: float = 1e-6) -> WeightReport:
    """Match every torch weight quantizer to an IR weight and compare codes and types.

    A torch weight matches the IR weight of the same shape whose dequantized values are
    within ``atol`` (relative to the weight's ``max|w_q|``) of ``w_q``. Each must be
    stored as :func:`storage_type` of its bit-width, with codes equal to ours.

    Args:
        ov_model: An ``openvino.Model`` (e.g. ``openvino_core().read_model(xml)``).
        qmodel (nn.Module): The torch fake-quant model it was exported from.
        example_input: One input for ``qmodel``.
        atol (float): Matching tolerance, relative. Defaults to 1e-6.

    Returns:
        WeightReport: See there; ``problems`` lists what does not hold.
    """
    report, candidates = WeightReport(), ir_weights(ov_model)
    for tw in torch_weights(qmodel, example_input):
        bound = atol * max(float(np.abs(tw.values).max()), 1e-12)
        match = None
        for ir in candidates:
            deq = _aligned(ir, tw.values.shape)
            if deq is not None and float(np.abs(deq - tw.values).max()) <= bound:
                match = (ir, deq)
                break
        if match is None:
            report.problems.append(f'{tw.name}: no IR weight equals its fake-quantized '
                                   'weight (stored in float, or computed in the graph)')
            continue
        ir, deq = match
        report.matched[tw.name] = ir.op
        report.element_types[tw.name] = ir.element_type
        report.max_abs_error = max(report.max_abs_error,
                                   float(np.abs(deq - tw.values).max()))
        want = storage_type(tw.num_bits)
        if ir.element_type != want:
            report.problems.append(f'{tw.name} ({tw.num_bits}-bit) is stored as '
                                   f'{ir.element_type}, not {want}')
            continue
        codes = ir.codes if ir.codes.shape == tw.codes.shape else ir.codes.T
        report.code_mismatches += int((codes != tw.codes).sum())
    if report.code_mismatches:
        report.problems.append(f'{report.code_mismatches} weight codes differ from the '
                               'torch quantizers\'')
    return report
