"""Fake quantization of the student with NNCF: the only package that imports NNCF.

``QuantScheme`` (no NNCF needed) fixes the bit-widths; :func:`quantize_model` builds the
quantized copy Q of a model with MaskAQ's placement; :func:`calibrate_ranges_` sets its
ranges in place; :func:`save_quantized` / :func:`load_quantized` round-trip it through a
``weights_only`` checkpoint; :func:`export_onnx` / :func:`export_openvino` deploy it.

Everything but ``QuantScheme`` is imported on first use, so ``import maskaq_plugin`` does
not pull in NNCF.
"""
from importlib import import_module

from .scheme import QuantScheme

_LAZY = {
    'QuantizationTraceError': 'preflight',
    'InputSizeError': 'preflight',
    'NothingToQuantizeError': 'preflight',
    'quantize_model': 'quantize',
    'calibrate_ranges_': 'calibrate',
    'quantizers_disabled': 'calibrate',
    'QuantizerInfo': 'inspect',
    'quantizer_info': 'inspect',
    'quantizer_bits': 'inspect',
    'verify_bits': 'inspect',
    'save_quantized': 'serialization',
    'load_quantized': 'serialization',
    'strip_quantized': 'export',
    'export_onnx': 'export',
    'export_openvino': 'export',
    'ExportMismatchError': 'export',
    'ensure_cpu_extension': 'extension',
    'frozen_quantizer_backward': 'frozen',
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['QuantScheme', *_LAZY]
