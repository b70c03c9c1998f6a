"""The authors' fake quantizers, as NNCF quantizer modules (``QuantScheme(recipe='lsq')``).

MaskAQ's released code (``quant_utils/quant_modules.py``: ``QuantAct_lsq`` with
``aq_mode='lsq'``, ``Quant_Linear``/``Quant_Conv2d`` with ``wq_mode='minmax'``) trains:

* **Activations** — LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020) with
  a learnable zero point: one step ``s`` and one zero point ``z`` per tensor::

      x_q = (⌊clamp(x / s' + ⌊z⌉, Q_n, Q_p)⌉ − ⌊z⌉) · s'

  where ``⌊·⌉`` rounds with a straight-through gradient and ``s'`` is ``s`` whose
  gradient is multiplied by ``g = 1/√(N·Q_p)`` (N = elements of the quantized tensor).
  ``z`` is rounded in the forward and its gradient is not scaled (in the released code
  the ``grad_scale`` of the zero point is computed and then overwritten). The grid is
  ``[−2^(b−1), 2^(b−1) − 1]`` when signed, ``[0, 2^b − 1]`` otherwise. Initialised on the
  first batch: ``s = 2·mean|x|/√Q_p``, ``z = 0.1·(min x − s·Q_p)`` (the released code's
  momentum update of a zero-initialised ``z``), signed when that batch has a negative
  value (docs/method.md, which also notes that the released code tests ``min x < 1e-5``).
* **Weights** — per output channel, symmetric, range recomputed from the current weights
  on every forward (min-max, no learned range)::

      w_q = clamp(⌊w · r⌉, −2^(b−1), 2^(b−1) − 1) / r,   r = (2^b − 1) / (2·max|w|)

  with a plain straight-through gradient (``∂w_q/∂w = 1`` everywhere, also where the
  top code clips).

Their torch ops run outside NNCF's function-hook mode (``disable_function_hook_mode``):
they are the hook, not part of the model's graph, and NNCF's per-op Python dispatch made a
frozen-student synthesis step of a tiny Swin 1.55× slower (0.185 against 0.119 s, same
input gradients bit for bit; NNCF's own fused quantizers: 0.108 s).

Both are NNCF ``BaseQuantizer`` subclasses, so NNCF's hook storage, ``get_config`` /
``load_from_config`` (with ``allowed_modules`` that include this package), state dicts
and ONNX / OpenVINO FakeQuantize export work unchanged. The weight quantizer keeps NNCF's
``scale`` (refreshed at every forward, never trained) so that export and
:func:`~maskaq_plugin.quant.export.strip_quantized` see the grid it used.
"""
import math

import torch
from nncf.common.quantization.structs import QuantizationScheme, QuantizerConfig
from nncf.torch.function_hook.hook_executor_mode import disable_function_hook_mode
from nncf.torch.quantization.layers import BaseQuantizer, SymmetricQuantizer
from nncf.torch.utils import no_jit_trace
from torch import distributed, nn

ZERO_POINT_MOMENTUM = 0.1  # released code: z = 0.9·z + 0.1·(min x − s·Q_p), z starts at 0
_MIN_STEP = 1e-8  # an all-zero first batch would give s = 0 (ours: keeps x / s finite)


def grad_scaled(x: torch.Tensor, scale) -> torch.Tensor:
    """``x`` in the forward; its gradient multiplied by ``scale`` in the backward."""
    scaled = x * scale
    return (x - scaled).detach() + scaled


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (half to even) with a straight-through gradient."""
    return (x.round() - x).detach() + x


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, zero_point: torch.Tensor,
                 q_min: int, q_max: int, grad_scale) -> torch.Tensor:
    """LSQ fake quantization with a learnable zero point (see the module docstring).

    Args:
        x (Tensor): Input of any shape.
        step (Tensor): Step ``s``, broadcastable to ``x`` (per tensor: shape ``(1,)``).
        zero_point (Tensor): Zero point ``z`` (rounded in the forward), same shape.
        q_min (int): Lowest integer code ``Q_n``.
        q_max (int): Highest integer code ``Q_p``.
        grad_scale: Factor ``g`` on the gradient of ``step``.

    Returns:
        Tensor: The dequantized values, on the grid ``(k − ⌊z⌉)·s``, ``k ∈ [Q_n, Q_p]``.

    Examples:
        >>> x = torch.tensor([-1.0, 0.24, 0.26, 9.0])
        >>> lsq_quantize(x, torch.tensor([0.5]), torch.tensor([0.0]), -2, 1, 1.0)
        tensor([-1.0000,  0.0000,  0.5000,  0.5000])
    """
    s = grad_scaled(step, grad_scale)
    z = round_ste(zero_point)
    return (round_ste((x / s + z).clamp(q_min, q_max)) - z) * s


def channel_absmax(w: torch.Tensor, reduce_dims) -> torch.Tensor:
    """``max|w|`` over ``reduce_dims`` (kept as size-1 axes), without gradient."""
    w = w.detach().abs()
    return w.amax(dim=reduce_dims, keepdim=True) if reduce_dims else w


def minmax_weight_quantize(w: torch.Tensor, num_bits: int, absmax: torch.Tensor) -> torch.Tensor:
    """Per-channel symmetric min-max fake quantization with a straight-through gradient.

    Args:
        w (Tensor): The weight.
        num_bits (int): Bit-width ``b``.
        absmax (Tensor): ``max|w|`` per channel (:func:`channel_absmax`), broadcastable.

    Returns:
        Tensor: ``clamp(⌊w·r⌉, −2^(b−1), 2^(b−1)−1) / r``, ``r = (2^b − 1)/(2·max|w|)``;
        gradient 1 with respect to ``w`` everywhere.
    """
    with torch.no_grad():
        inv_step = (2**num_bits - 1) / torch.clamp(2 * absmax, min=1e-8)
        half = 2**(num_bits - 1)
        q = torch.round(w.detach() * inv_step).clamp(-half, half - 1) / inv_step
    return w + (q - w).detach()


class LSQActivationQuantizer(BaseQuantizer):
    """Per-tensor LSQ activation quantizer with a learnable zero point (the authors').

    Parameters: ``step`` and ``zero_point`` (trainable, shape ``scale_shape``). Buffers
    in the state dict: ``signed_tensor``, ``grad_scale`` (``g``, fixed at init),
    ``minmax_init`` and NNCF's ``_num_bits`` / ``enabled``. Ranges are set by
    :func:`~maskaq_plugin.quant.calibrate_ranges_`: :meth:`init_from_batch` on the first
    calibration batch (the authors'), or :meth:`init_from_range` on the mean min-max of
    every calibration batch when ``minmax_init`` is set (``act_init='minmax'``).
    """

    def __init__(self, qspec):
        super().__init__(qspec)
        self.step = nn.Parameter(torch.ones(self.scale_shape))
        self.zero_point = nn.Parameter(torch.zeros(self.scale_shape))
        self.signed_tensor = nn.Parameter(torch.IntTensor([0]), requires_grad=False)
        self.register_buffer('grad_scale', torch.ones(()))
        # 1: initialise from the calibration's mean min-max range (act_init='minmax')
        self.register_buffer('minmax_init', torch.zeros((), dtype=torch.int32))
        if qspec.signedness_to_force is not None:
            self.signed_tensor.fill_(int(bool(qspec.signedness_to_force)))
        self.set_levels()
        self.register_load_state_dict_post_hook(lambda module, _: module.set_levels())

    # ---------------------------------------------------------------- state
    @property
    def signed(self) -> bool:
        with no_jit_trace():
            return bool(self.signed_tensor.item() == 1)

    @signed.setter
    def signed(self, signed: bool):
        self.signed_tensor.fill_(int(signed))
        self.set_levels()

    def set_levels(self):
        bits = self.num_bits
        if self.signed:
            self.level_low, self.level_high = -2**(bits - 1), 2**(bits - 1) - 1
        else:
            self.level_low, self.level_high = 0, 2**bits - 1

    def enable_gradients(self):
        self.step.requires_grad_(True)
        self.zero_point.requires_grad_(True)

    def disable_gradients(self):
        self.step.requires_grad_(False)
        self.zero_point.requires_grad_(False)

    def get_trainable_params(self):
        return {'step': self.step, 'zero_point': self.zero_point}

    @torch.no_grad()
    def init_from_batch(self, abs_mean: float, minimum: float, numel: int) -> None:
        """The released code's first-batch initialisation, from that batch's statistics.

        Args:
            abs_mean (float): ``mean|x|`` of the first batch.
            minimum (float): ``min x`` of the first batch (negative: signed grid).
            numel (int): Elements of the quantized tensor, ``N`` of ``g = 1/√(N·Q_p)``.
        """
        self.signed = minimum < 0
        q_p = self.level_high
        step = max(2 * abs_mean / math.sqrt(q_p), _MIN_STEP)
        self.step.fill_(step)
        self.zero_point.fill_(ZERO_POINT_MOMENTUM * (minimum - step * q_p))
        self.grad_scale.fill_(1.0 / math.sqrt(numel * q_p))
        self.initialized = True

    @torch.no_grad()
    def init_from_range(self, low: float, high: float, signed: bool, numel: int) -> None:
        """``act_init='minmax'`` *(ours)*: the grid spans ``[low, high]``.

        ``step = (high − low)/(Q_p − Q_n)`` and ``z = Q_n − low/step`` (so the lowest
        code sits at ``low``), signed as given; LSQ's gradient scale as in
        :meth:`init_from_batch`.

        Args:
            low (float): Low end (the mean over samples of the per-sample minimum).
            high (float): High end (the mean of the per-sample maximum).
            signed (bool): Signed grid (a negative value was seen).
            numel (int): Elements of the first calibration batch's tensor (N of g).
        """
        self.signed = signed
        step = max((high - low) / (self.level_high - self.level_low), _MIN_STEP)
        self.step.fill_(step)
        self.zero_point.fill_(self.level_low - low / step)
        self.grad_scale.fill_(1.0 / math.sqrt(numel * self.level_high))
        self.initialized = True

    def broadcast_initialized_params(self, src: int = 0):
        super().broadcast_initialized_params(src)
        for t in (self.step, self.zero_point, self.signed_tensor, self.grad_scale):
            distributed.broadcast(t, src=src)

    # -------------------------------------------------------------- forward
    def quantize(self, x, execute_traced_op_as_identity: bool = False):
        if execute_traced_op_as_identity:
            return x
        with disable_function_hook_mode():  # see the module docstring: speed
            return lsq_quantize(x, self.step, self.zero_point, self.level_low,
                                self.level_high, self.grad_scale)

    # --------------------------------------------------------------- export
    def _get_input_low_input_high(self, step=None, zero_point=None):
        step = self.step if step is None else step
        z = torch.round(self.zero_point if zero_point is None else zero_point)
        return (self.level_low - z) * step, (self.level_high - z) * step

    def get_input_low_input_high(self):
        return self._get_input_low_input_high()

    def _prepare_export_quantization(self, x: torch.Tensor):
        with no_jit_trace():
            input_low, input_high = self._get_input_low_input_high()
        return x, self.level_high, self.level_low, input_low, input_high

    def get_parameters_for_torch_fq(self):
        with torch.no_grad(), no_jit_trace():
            return (self.level_low, self.level_high, self.step.detach().view(-1),
                    torch.round(self.zero_point.detach()).view(-1).to(torch.int32))

    def get_quantizer_config(self) -> QuantizerConfig:
        return QuantizerConfig(num_bits=self.num_bits, mode=QuantizationScheme.ASYMMETRIC,
                               signedness_to_force=self.signed, per_channel=self.per_channel)

    def extra_repr(self):
        return f'bit={self.num_bits}, signed={self.signed}, lsq'


class MinMaxWeightQuantizer(SymmetricQuantizer):
    """Per-channel symmetric weight quantizer whose range follows the weights (the authors').

    The grid is ``[−2^(b−1), 2^(b−1) − 1]·step`` with ``step = 2·max|w|/(2^b − 1)``
    per output channel, recomputed on every forward; nothing is learned (NNCF's ``scale``
    holds ``step·(2^(b−1) − 1)``, NNCF's symmetric convention for the same grid, for
    export). Build it with a spec that is signed and not narrow-range.
    """

    def __init__(self, qspec):
        if qspec.signedness_to_force is not True or qspec.narrow_range:
            raise ValueError('MinMaxWeightQuantizer needs signedness_to_force=True and '
                             f'narrow_range=False, got {qspec.signedness_to_force!r} and '
                             f'{qspec.narrow_range!r}')
        super().__init__(qspec)
        self.disable_gradients()

    def enable_gradients(self):
        """The range is never trained (it is recomputed from the weights)."""
        self.disable_gradients()

    def _reduce_dims(self, x):
        shape = tuple(self.scale_shape)
        if len(shape) != x.dim():
            return list(range(x.dim()))  # per tensor
        return [d for d, s in enumerate(shape) if s == 1]

    @torch.no_grad()
    def refresh_scale(self, w: torch.Tensor, absmax: torch.Tensor = None) -> torch.Tensor:
        """Set NNCF's ``scale`` to the grid that :meth:`quantize` uses for ``w``; returns
        the per-channel ``max|w|`` (pass it when already computed)."""
        if absmax is None:
            absmax = channel_absmax(w, self._reduce_dims(w))
        step = torch.clamp(2 * absmax, min=1e-8) / (2**self.num_bits - 1)
        self._scale_param_storage.data.copy_(
            (step * self.level_high).reshape(self._scale_param_storage.shape))
        return absmax

    def quantize(self, x, execute_traced_op_as_identity: bool = False):
        if execute_traced_op_as_identity:
            return x
        with disable_function_hook_mode():  # see the module docstring: speed
            return minmax_weight_quantize(x, self.num_bits, self.refresh_scale(x))

    def _prepare_export_quantization(self, x: torch.Tensor):
        with no_jit_trace():
            self.refresh_scale(x)
        return super()._prepare_export_quantization(x)

    def extra_repr(self):
        return f'bit={self.num_bits}, ch={self.per_channel}, minmax'
