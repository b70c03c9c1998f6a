"""Input-only backward for frozen fake quantizers (Stage 1 synthesis of a frozen Q).

During synthesis the quantized student Q is frozen, yet the images receive gradients
through it (``L_mad``). The only gradient then needed from a fake quantizer is the
straight-through one with respect to its input: ``grad_output`` where
``input_low <= x <= input_low + input_range`` and 0 outside. NNCF's CPU backward always
also computes the range gradient: it re-runs the quantization, builds the rounding
error and reduces it over the tensor (``q_cpu_backward`` in NNCF's
``functions_cpu.cpp``), about 3/4 of its work wasted when the range is frozen (27 % of a
tiny Swin synthesis iteration, see docs/benchmarks.md, "Synthesis speed").

Inside :func:`frozen_quantizer_backward`, a CPU fake quantizer whose range parameters do
not require grad runs NNCF's own forward kernel and a backward that computes the same
input gradient (bit-identical) and nothing else; it also saves a boolean mask instead of
the input and both ranges. Any quantizer whose range requires grad (QAT), and every
CUDA tensor, keeps NNCF's original functions.
"""
from contextlib import contextmanager

import torch
from nncf.torch.quantization import quantize_functions as qf
from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

_LOW_PRECISION = (torch.bfloat16, torch.float16)


class _FrozenQuantize(torch.autograd.Function):
    """NNCF's forward on ``(input_low, input_range)``; gradient w.r.t. the input only."""

    @staticmethod
    def forward(ctx, input_, input_low, input_range, levels):
        output = QuantizedFunctionsCPU.get('Quantize_forward')(input_, input_low, input_range,
                                                               levels)
        # NNCF's backward zeroes the gradient where input < low or input > low + range
        ctx.save_for_backward((input_ < input_low) | (input_ > input_low + input_range))
        return output

    @staticmethod
    def backward(ctx, grad_output):
        outside, = ctx.saved_tensors
        return grad_output.masked_fill(outside, 0), None, None, None


def _frozen(input_, *ranges) -> bool:
    """A CPU input that needs a gradient, through ranges that do not."""
    return input_.requires_grad and torch.is_grad_enabled() and not input_.is_cuda \
        and not any(r.requires_grad for r in ranges)


class _Symmetric:
    """Stands in for ``QuantizeSymmetric`` (same ``apply`` signature)."""
    original = qf.QuantizeSymmetric

    @staticmethod
    def apply(input_, scale, level_low, level_high, levels):
        if not _frozen(input_, scale):
            return _Symmetric.original.apply(input_, scale, level_low, level_high, levels)
        if input_.dtype in _LOW_PRECISION:
            scale = scale.type(input_.dtype)
        input_low = scale * (level_low / level_high)  # as NNCF's QuantizeSymmetric
        return _FrozenQuantize.apply(input_, input_low, scale - input_low, levels)


class _Asymmetric:
    """Stands in for ``QuantizeAsymmetric`` (same ``apply`` signature)."""
    original = qf.QuantizeAsymmetric

    @staticmethod
    def apply(input_, input_low, input_range, level_low, level_high, levels):
        if not _frozen(input_, input_low, input_range):
            return _Asymmetric.original.apply(input_, input_low, input_range, level_low,
                                              level_high, levels)
        if input_.dtype in _LOW_PRECISION:
            input_low, input_range = input_low.type(input_.dtype), input_range.type(
                input_.dtype)
        return _FrozenQuantize.apply(input_, input_low, input_range, levels)


@contextmanager
def frozen_quantizer_backward():
    """Within the block, frozen CPU fake quantizers back-propagate to their input only.

    Gradients that reach the inputs are unchanged (bit-identical); only the unused range
    gradients of quantizers whose ranges do not require grad are skipped. Process-wide
    while active (NNCF looks its autograd functions up by module global); nesting is fine.

    Examples:
        >>> import torch
        >>> from nncf.torch.quantization.quantize_functions import symmetric_quantize
        >>> from maskaq_plugin.quant.frozen import frozen_quantizer_backward
        >>> x = torch.tensor([-2.0, 0.3, 2.0], requires_grad=True)
        >>> with frozen_quantizer_backward():  # scale 1.0 does not require grad
        ...     y = symmetric_quantize(x, 256, -128, 127, torch.tensor(1.0), 1e-16)
        >>> y.sum().backward()
        >>> x.grad  # straight-through inside the range, 0 where clipped
        tensor([0., 1., 0.])
    """
    saved = qf.QuantizeSymmetric, qf.QuantizeAsymmetric
    qf.QuantizeSymmetric, qf.QuantizeAsymmetric = _Symmetric, _Asymmetric
    try:
        yield
    finally:
        qf.QuantizeSymmetric, qf.QuantizeAsymmetric = saved
