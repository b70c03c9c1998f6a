"""Deploy a quantized model: strip it, export ONNX, export and check OpenVINO IR.

**OpenVINO runtime settings.** On a CPU with bf16 support, OpenVINO's CPU plugin runs by
default in bf16 (``INFERENCE_PRECISION_HINT``) and re-quantizes the activations of every
FullyConnected with sub-8-bit compressed weights to int8 in groups of 32
(``DYNAMIC_QUANTIZATION_GROUP_SIZE``). Both move values across the rounding boundaries
of low-bit FakeQuantize nodes: a W4A4 ViT differed from its torch model by 43 % (max
|diff| / max |ref|) with the defaults, 34 % with f32 only, and 3e-7 with f32 and dynamic
quantization off (W3A3: 70 % → 2e-7; W8A8: 2.0 % → 0.9 %, the rest being NNCF's export
FakeQuantize rounding values within float error of a rounding midpoint differently from
its training kernel: a few 1-LSB flips, which propagate). So compile the IR
with :data:`OPENVINO_CPU_CONFIG` (:func:`compile_openvino` does). The IR carries
``DYNAMIC_QUANTIZATION_GROUP_SIZE=0`` in its ``runtime_options``, which OpenVINO 2026.4
applies; it ignores a precision hint stored there, so the config is still needed.

**Strip.** ``nncf.strip`` (NATIVE) needs ``torchao``, converts only 8-bit quantizers and
still leaves an NNCF-wrapped model. :func:`strip_quantized` instead folds every weight
quantizer into its weight (the weight then holds its quantized values, no weight
fake-quant at run time) at any bit-width, and keeps the activation quantizers as NNCF
fake-quant modules (there is no native sub-8-bit activation quantization in torch).

**Check against the model's own noise floor.** A quantized network can be chaotic at
float rounding level: a value within float error of a rounding midpoint lands in either
bin, and a flipped bin propagates through the following quantizers. A randomly
initialised SegFormer MiT-B0 backbone at W4A8 (128 px) moved by 8.9 % (relative L2) in
torch alone when its input was multiplied by ``1 + 1e-6·n``, and its OpenVINO IR differed
from torch by 8.0 %; without its activation quantizers the IR matched to 9e-7. No runtime
can reproduce such a model closer than its own sensitivity, so :func:`export_openvino`
accepts an error above ``rtol`` when it is within :data:`NOISE_FLOOR_MARGIN` times the
torch model's largest output change over :data:`NOISE_FLOOR_DRAWS` such perturbations
(:func:`output_noise_floor`), and warns with both numbers. The floor is measured only
when the plain check fails; whether trained full-size students ever reach it is not
measured (only random teachers were at hand), and a random teacher's floor is wide
(up to 45 % at W4A4), so there the weight-code check is the one that constrains.
"""
import copy
import functools
import os
import warnings
from contextlib import contextmanager
from typing import Any, Optional

import numpy as np
import torch
from nncf.torch.function_hook.hook_storage import HookStorage
from nncf.torch.function_hook.wrapper import ATR_HOOK_STORAGE, get_hook_storage
from nncf.torch.graph.operator_metatypes import PTConstNoopMetatype
from nncf.torch.model_graph_manager import get_const_data, get_module_by_name, split_const_name
from nncf.torch.quantization.layers import QuantizerExportMode
from torch import nn

from .inspect import iter_quantizers, quantizer_info
from .ir_weights import compare_ir_weights
from .quantize import trace_graph

OPENVINO_CPU_CONFIG = {'INFERENCE_PRECISION_HINT': 'f32', 'DYNAMIC_QUANTIZATION_GROUP_SIZE': 0}
# Exported model vs the torch fake-quant model, relative L2 error; see tests/test_quant.
DEFAULT_EXPORT_RTOL = 5e-2
# Output noise floor: relative input perturbation (float32 kernels' rounding scale),
# draws, and the margin on the largest change accepted as "within the floor".
NOISE_FLOOR_EPS = 1e-6
NOISE_FLOOR_DRAWS = 3
NOISE_FLOOR_MARGIN = 1.5


class ExportMismatchError(RuntimeError):
    """The exported model does not reproduce the torch fake-quant model."""


def _args(example_input: Any) -> tuple:
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    return tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)


def _flat_outputs(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    return [o for item in out for o in _flat_outputs(item)]


def relative_error(outputs, references) -> float:
    """Largest relative L2 error ``‖out − ref‖ / ‖ref‖`` over paired outputs."""
    return max(float(np.linalg.norm(np.asarray(o, np.float64) - r) / (np.linalg.norm(r) + 1e-12))
               for o, r in zip(outputs, references))


@torch.no_grad()
def output_noise_floor(model: nn.Module, args: tuple, references: list, *,
                       eps: float = NOISE_FLOOR_EPS, draws: int = NOISE_FLOOR_DRAWS,
                       seed: int = 0) -> float:
    """Largest relative L2 change of ``model``'s outputs (vs ``references``, its outputs on
    ``args``) when every floating-point input is multiplied by ``1 + eps·n``, ``n ~ N(0, 1)``
    drawn from a generator seeded with ``seed``, over ``draws`` draws."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(draws):
        noisy = tuple(a * (1 + eps * torch.randn(a.shape, generator=gen).to(a))
                      if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        worst = max(worst, relative_error(_flat_outputs(model(*noisy)), references))
    return worst


@torch.no_grad()
def strip_quantized(qmodel: nn.Module, example_input: Any) -> nn.Module:
    """Copy of ``qmodel`` with every weight quantizer folded into its weight.

    Outputs are unchanged (the folded weight is exactly what the quantizer produced).
    Activation quantizers stay (NNCF fake-quant, any bit-width); a weight computed by the
    model rather than stored as a parameter keeps its quantizer.

    Args:
        qmodel (nn.Module): Model from :func:`quantize_model` (wrapped by NNCF).
        example_input: One input, used to find the parameter behind each weight port.

    Returns:
        nn.Module: The stripped copy (still NNCF-wrapped; ``qmodel`` is not modified).
    """
    model = copy.deepcopy(qmodel)
    model.eval()  # OpenMMLab backbones' train() returns None: never chain it
    bare = copy.deepcopy(model)  # traced without hooks: weight ports read constants
    setattr(bare, ATR_HOOK_STORAGE, HookStorage())
    graph = trace_graph(bare, example_input)
    storage = get_hook_storage(model)
    for info in quantizer_info(model):
        if info.kind != 'weight':
            continue
        edges = graph.get_input_edges(graph.get_node_by_name(info.op))
        const = next((e.from_node for e in edges if e.input_port_id == info.port), None)
        if const is None or const.metatype is not PTConstNoopMetatype:
            continue  # a weight computed in the forward (e.g. a chunk of in_proj_weight)
        quantizer = storage.get_submodule(info.name)
        module_name, attr = split_const_name(const.layer_attributes.name)
        owner = get_module_by_name(module_name, model)
        weight = get_const_data(const, model)
        getattr(owner, attr).data = quantizer.quantize(weight).detach().clone()
        storage.delete_hook(info.name)
    return model


@contextmanager
def _quiet_tracing():
    # NNCF's quantizers read their levels with .item() while traced: harmless here.
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        yield


def _export_copy(qmodel: nn.Module, mode: Optional[QuantizerExportMode]) -> nn.Module:
    """A CPU copy in eval mode; its quantizers set to export ``mode`` unless None."""
    model = copy.deepcopy(qmodel).cpu()
    model.eval()
    if mode is not None:
        for _, q in iter_quantizers(model):
            q.set_export_mode(mode)
    return model


def export_onnx(qmodel: nn.Module, example_input: Any, path: str, *, opset: int = 17,
                qdq: Optional[bool] = None) -> str:
    """Export ``qmodel`` to ONNX with the TorchScript exporter (``dynamo=False``).

    Args:
        qmodel (nn.Module): Model from :func:`quantize_model`.
        example_input: One input (tensor or tuple of positional tensors).
        path (str): Output ``.onnx`` file.
        opset (int): ONNX opset. Defaults to 17.
        qdq (bool, optional): ``True``: standard ``QuantizeLinear``/``DequantizeLinear``
            pairs (8-bit only; onnxruntime runs them). ``False``: OpenVINO
            ``FakeQuantize`` nodes (domain ``org.openvinotoolkit``; any bit-width;
            OpenVINO reads them, onnxruntime does not). Defaults to ``True`` when every
            quantizer is 8-bit, else ``False``.

    Returns:
        str: ``path``.

    Raises:
        ValueError: ``qdq=True`` with quantizers below 8 bits.
    """
    low = [i.name for i in quantizer_info(qmodel) if i.num_bits != 8]
    if qdq is None:
        qdq = not low
    if qdq and low:
        raise ValueError(f'ONNX QuantizeLinear/DequantizeLinear pairs are 8-bit only, but '
                         f'{len(low)} quantizers have fewer bits (e.g. {low[0]}); export '
                         'with qdq=False (OpenVINO FakeQuantize nodes) instead')
    mode = QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS if qdq \
        else QuantizerExportMode.FAKE_QUANTIZE
    model = _export_copy(qmodel, mode)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(model, _args(example_input), path, dynamo=False,
                          opset_version=opset)
    return path


@functools.lru_cache(maxsize=None)
def openvino_core():
    """The process's one ``openvino.Core``, shared by every compile in this package.

    Each ``Core`` that loads the CPU plugin makes the plugin install an alternate signal
    stack (``sigaltstack``, 11.5 KB, mmap'd) on the calling thread. When the plugin is
    destroyed (its last compiled model gone) it unmaps that stack, and puts back the one
    it found only if its own is still installed. So two plugins destroyed oldest first
    (compiled models of two ``Core`` objects, the older released first) leave the thread
    on an unmapped alternate stack (OpenVINO 2026.4.1), and the next signal with a Python
    handler (CPython installs those with ``SA_ONSTACK``; e.g. torch's DataLoader SIGCHLD
    handler) kills the process with SIGSEGV (``SI_KERNEL``), faulthandler silent. One
    shared ``Core`` loads the plugin once, so the alternate stack stays valid.
    """
    import openvino as ov
    return ov.Core()


def compile_openvino(model_or_path, device: str = 'CPU', config: Optional[dict] = None):
    """Compile an IR with :data:`OPENVINO_CPU_CONFIG` (plus ``config``) on ``device``.

    Uses :func:`openvino_core` (one ``Core`` per process; see there why not one per call).
    """
    settings = dict(OPENVINO_CPU_CONFIG if device == 'CPU' else {}, **(config or {}))
    return openvino_core().compile_model(model_or_path, device, settings)


def export_openvino(qmodel: nn.Module, example_input: Any, path: str, *, check: bool = True,
                    rtol: float = DEFAULT_EXPORT_RTOL) -> str:
    """Convert ``qmodel`` to OpenVINO IR (``.xml`` + ``.bin``) and check it.

    The model is traced once with ``torch.jit.trace(check_trace=False)`` (OpenVINO's own
    trace re-runs the model to check it: 3-4x slower, and it warns about NNCF's export
    rounding), converted with ``openvino.convert_model`` and saved with
    ``compress_to_fp16=False``. The IR stores every quantized weight as integers:
    ``i4`` for at most 4 bits, ``i8`` above, with a ``Convert → Multiply(scale)``
    decompression subgraph (OpenVINO folds each weight FakeQuantize on conversion; see
    :mod:`.ir_weights`); activations stay ``FakeQuantize`` nodes.

    Args:
        qmodel (nn.Module): Model from :func:`quantize_model`.
        example_input: One input (tensor or tuple of positional tensors).
        path (str): Output ``.xml`` path (the ``.bin`` goes beside it).
        check (bool): Compile the saved IR with :func:`compile_openvino`, run it on
            ``example_input`` and compare with ``qmodel``; and read the IR's weights
            back: each quantized weight must be stored as ``i4`` / ``i8`` integer codes
            equal to those of its torch quantizer
            (:func:`~maskaq_plugin.quant.ir_weights.compare_ir_weights`). Defaults to True.
        rtol (float): Largest relative L2 error accepted by the check. Defaults to 5e-2.
            A larger error passes, with a warning, when it is within
            :data:`NOISE_FLOOR_MARGIN` times :func:`output_noise_floor` of the torch model
            (see the module docstring).

    Returns:
        str: The ``.xml`` path.

    Raises:
        ExportMismatchError: The IR's outputs differ from ``qmodel``'s beyond ``rtol``, or
            a quantized weight is not stored as its torch quantizer's integer codes.
    """
    import openvino as ov
    model = _export_copy(qmodel, QuantizerExportMode.FAKE_QUANTIZE)
    args = _args(example_input)
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(model, args, check_trace=False)
    ov_model = ov.convert_model(traced, example_input=args)
    ov_model.set_rt_info('0', ['runtime_options', 'DYNAMIC_QUANTIZATION_GROUP_SIZE'])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ov.save_model(ov_model, path, compress_to_fp16=False)
    if check:
        with torch.no_grad():
            refs = _flat_outputs(model(*args))
        compiled = compile_openvino(path)
        result = compiled([a.cpu().numpy() for a in args])
        err = relative_error([result[o] for o in compiled.outputs], refs)
        if not err <= rtol:
            floor = output_noise_floor(model, args, refs)
            what = (f'relative L2 error {err:.3g} > {rtol:g} (compiled with '
                    f'{OPENVINO_CPU_CONFIG}); the torch model itself moves by up to '
                    f'{floor:.3g} when its input is multiplied by 1 + {NOISE_FLOOR_EPS:g}·n '
                    f'({NOISE_FLOOR_DRAWS} draws)')
            if not err <= NOISE_FLOOR_MARGIN * floor:
                raise ExportMismatchError(
                    f'OpenVINO IR {path} differs from the torch model: {what}, so the '
                    f'difference is not float rounding (accepted up to '
                    f'{NOISE_FLOOR_MARGIN:g}x that).')
            warnings.warn(f'OpenVINO IR {path}: {what}; accepted as within the model\'s own '
                          f'float-rounding noise floor (x{NOISE_FLOOR_MARGIN:g})',
                          RuntimeWarning, stacklevel=2)
        # the quantizers' own forward (not their export rounding) gives our codes
        report = compare_ir_weights(openvino_core().read_model(path),
                                    _export_copy(qmodel, None), args)
        if report.problems:
            raise ExportMismatchError(f'OpenVINO IR {path} does not store the quantized '
                                      'weights as integer codes: '
                                      + '; '.join(report.problems[:5]))
    return path
