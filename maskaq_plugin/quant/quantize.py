"""Build the fake-quantized student Q from the full-precision model F with NNCF.

``quantize_model`` returns an NNCF-wrapped *copy* of F (the module tree is intact, so
forward hooks and attention taps keep working) with trainable fake quantizers (recipe
``'lsq'``: the authors', :mod:`.lsq`, NNCF quantizer subclasses; ``'nncf'``: NNCF's own)
inserted as pre-hooks at the places :mod:`.placement` computes. Only quantizers are
added: no SmoothQuant, no bias correction, no weight change, so Q with its quantizers
disabled computes exactly what F computes.

Why not ``nncf.quantize``: its placement is not the paper's (see :mod:`.placement`), its
default hardware config refuses 4-bit, and its SmoothQuant/bias correction change the
weights. NNCF's hook storage, quantizer base class, ``get_config``/``load_from_config``
and export are used unchanged (recipe ``'nncf'``: its quantizers and QAT gradients too).
"""
import copy
from typing import Any, Dict, Iterable, Optional, Union

import torch
from nncf.common.quantization.structs import QuantizationScheme
from nncf.torch.function_hook import register_pre_function_hook, wrap_model
from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
from nncf.torch.quantization.layers import (AsymmetricQuantizer, PTQuantizerSpec,
                                            SymmetricQuantizer)
from torch import nn

from .calibrate import DEFAULT_SUBSET_SIZE, calibrate_ranges_
from .extension import ensure_cpu_extension
from .inspect import wrapped_submodules
from .lsq import LSQActivationQuantizer, MinMaxWeightQuantizer
from .placement import (WEIGHT, QuantPoint, find_hidden_attention, plan_quantizers,
                        recording_op_modules)
from .preflight import (InputSizeError, ModuleStack, NothingToQuantizeError,  # noqa: F401
                        QuantizationTraceError, check_quantizes_something, check_runs_on)
from .scheme import QuantScheme

SCHEME_ATTR = 'maskaq_scheme'


def make_quantizer(point: QuantPoint, scheme: QuantScheme) -> nn.Module:
    """NNCF quantizer module for ``point`` (its ranges are set by calibration).

    Recipe ``'lsq'``: :class:`~.lsq.MinMaxWeightQuantizer` / :class:`~.lsq.LSQActivationQuantizer`
    (the authors'); recipe ``'nncf'``: NNCF's ``SymmetricQuantizer`` (weights, narrow range)
    and ``SymmetricQuantizer`` / ``AsymmetricQuantizer`` (activations).
    """
    if point.kind == WEIGHT:
        lsq = scheme.recipe == 'lsq'
        # is_quantized_on_export: weights are exported already on the grid, so a QDQ or
        # FakeQuantize node downstream is exact whatever its clamping convention.
        spec = PTQuantizerSpec(num_bits=scheme.w_bits, mode=QuantizationScheme.SYMMETRIC,
                               signedness_to_force=True, narrow_range=not lsq,
                               half_range=False, scale_shape=point.scale_shape,
                               logarithm_scale=False, is_quantized_on_export=True)
        return MinMaxWeightQuantizer(spec) if lsq else SymmetricQuantizer(spec)
    if scheme.recipe == 'lsq':
        spec = PTQuantizerSpec(num_bits=scheme.a_bits, mode=QuantizationScheme.ASYMMETRIC,
                               signedness_to_force=None, narrow_range=False,
                               half_range=False, scale_shape=point.scale_shape,
                               logarithm_scale=False, is_quantized_on_export=False)
        quantizer = LSQActivationQuantizer(spec)
        quantizer.minmax_init.fill_(int(scheme.act_init == 'minmax'))
        return quantizer
    symmetric = scheme.activation_mode == 'symmetric'
    spec = PTQuantizerSpec(
        num_bits=scheme.a_bits,
        mode=QuantizationScheme.SYMMETRIC if symmetric else QuantizationScheme.ASYMMETRIC,
        signedness_to_force=None, narrow_range=False, half_range=False,
        scale_shape=point.scale_shape, logarithm_scale=False, is_quantized_on_export=False)
    return SymmetricQuantizer(spec) if symmetric else AsymmetricQuantizer(spec)


def trace_graph(qmodel: nn.Module, example_input: Any,
                op_modules: Optional[Dict[str, str]] = None):
    """NNCF graph of a wrapped model; on failure, name the module that failed and the fix.

    Args:
        qmodel (nn.Module): NNCF-wrapped model.
        example_input: One input of ``qmodel``.
        op_modules (dict, optional): When given, filled with NNCF operation name → dotted
            path of the module that ran it (:func:`.placement.recording_op_modules`;
            NNCF's own names drop the segments of uncalled containers). Defaults to None.

    Raises:
        QuantizationTraceError: The forward failed while NNCF traced it.
    """
    tracker = ModuleStack(qmodel)
    try:
        was_training = qmodel.training
        qmodel.eval()
        try:
            if op_modules is None:
                return build_nncf_graph(qmodel, example_input)
            with recording_op_modules(qmodel) as recorded:
                graph = build_nncf_graph(qmodel, example_input)
            op_modules.update(recorded)
            return graph
        finally:
            qmodel.train(was_training)
    except Exception as err:
        raise QuantizationTraceError(
            f'NNCF could not trace {type(qmodel).__name__}: it failed inside '
            f'{tracker.where(qmodel)} with {type(err).__name__}: {err}. Check that '
            'the model runs eagerly on example_input (same type, shape and device as in '
            'training), and that the module has no torch.jit/compiled or non-torch code; '
            'quantize only the backbone if another part cannot be traced.') from err
    finally:
        tracker.remove()


def quantize_model(model: nn.Module, scheme: QuantScheme, example_input: Any, *,
                   calib_inputs: Optional[Union[torch.Tensor, Iterable]] = None,
                   subset_size: int = DEFAULT_SUBSET_SIZE) -> nn.Module:
    """Return a fake-quantized copy of ``model`` (NNCF hooks; module tree intact).

    Call :func:`maskaq_plugin.attention.make_attention_explicit` on ``model`` first so
    that NNCF sees both attention matmuls. ``model`` itself is not modified.

    Args:
        model (nn.Module): Full-precision model or backbone F.
        scheme (QuantScheme): Bit-widths and placement options.
        example_input: One input of ``model`` (a tensor, a tuple of positional
            arguments or a dict of keyword arguments), used to trace it.
        calib_inputs: A batch, or an iterable of batches, to set the initial quantizer
            ranges (:func:`calibrate_ranges_`). Defaults to ``example_input`` (a
            placeholder when no data exists yet: recalibrate on real or synthetic
            images before training).
        subset_size (int): At most this many samples are used for calibration.
            Defaults to 256.

    Returns:
        nn.Module: The quantized copy Q; ``Q.maskaq_scheme`` holds ``scheme``.

    Raises:
        InputSizeError: ``model`` does not run on ``example_input`` (e.g. an input size
            the backbone cannot take), naming the size, the failing module, the original
            error and sizes that run; a ``ValueError`` and a ``QuantizationTraceError``.
        NothingToQuantizeError: The scheme places no quantizer in ``model``.
        QuantizationTraceError: NNCF cannot trace the model, or an attention module's
            matmuls are hidden (fused), naming the module and the fix.
    """
    if not isinstance(scheme, QuantScheme):
        raise TypeError(f'scheme must be a QuantScheme, got {type(scheme).__name__}')
    if wrapped_submodules(model):
        raise ValueError(f'{type(model).__name__} is already NNCF-wrapped (quantized); pass '
                         'the full-precision model')
    check_runs_on(model, example_input)  # before NNCF: a bad input size fails here
    ensure_cpu_extension()
    qmodel = wrap_model(copy.deepcopy(model))
    op_modules: Dict[str, str] = {}
    graph = trace_graph(qmodel, example_input, op_modules)
    if scheme.quantize_attention_matmuls:
        hidden = find_hidden_attention(qmodel, graph, op_modules)
        if hidden:
            names = ', '.join(f'{p or "<root>"} ({c})' for p, c in hidden)
            raise QuantizationTraceError(
                f'NNCF cannot see the attention matmuls of {names}: they run a fused '
                'kernel (F.scaled_dot_product_attention or nn.MultiheadAttention\'s fast '
                'path) or fewer than two explicit matmuls. Call '
                'maskaq_plugin.attention.make_attention_explicit(model) before '
                'quantize_model (timm: or set fused_attn=False on each attention), or '
                'pass QuantScheme(quantize_attention_matmuls=False).')
    param = next(qmodel.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    points = plan_quantizers(graph, scheme)
    check_quantizes_something(model, graph, points, scheme)
    for point in points:
        quantizer = make_quantizer(point, scheme).to(device)
        register_pre_function_hook(qmodel, point.op, point.port, quantizer)
    setattr(qmodel, SCHEME_ATTR, scheme)
    calibrate_ranges_(qmodel, example_input if calib_inputs is None else calib_inputs,
                      subset_size=subset_size)
    return qmodel
