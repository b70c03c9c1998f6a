"""The quantization scheme of MaskAQ's Stage 2 (see docs/method.md, "Stage 2: QAT").

Weights are quantized per output channel, symmetrically, at ``w_bits``; activations per
tensor at ``a_bits`` with learnable ranges. The model's image input (the input of the
patch embedding) stays in full precision; every Linear/Conv input and weight and both
operands of both attention matmuls (``q @ kᵀ`` and ``attn @ v``) are quantized.

This module does not import NNCF, so the scheme can be built and validated cheaply.
"""
import numbers
from dataclasses import KW_ONLY, asdict, dataclass

MIN_BITS = 2
MAX_BITS = 8
ACTIVATION_MODES = ('symmetric', 'asymmetric')


def _check_bits(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f'{name} must be an integer in [{MIN_BITS}, {MAX_BITS}], '
                         f'got {value!r}')


@dataclass(frozen=True)
class QuantScheme:
    """Bit-widths and placement options of the fake-quantized student.

    Args:
        w_bits (int): Weight bit-width, per-channel symmetric (narrow range, i.e.
            ``2**w_bits - 1`` levels). Integer in [2, 8]. Defaults to 8.
        a_bits (int): Activation bit-width, per-tensor (``2**a_bits`` levels), for the
            inputs of every Linear/Conv and both operands of both attention matmuls.
            Integer in [2, 8]. Defaults to 8.
        keep_input_fp (bool): Leave the model's image input (the input of the patch
            embedding and anything computed from the raw input alone) unquantized.
            Defaults to True.
        quantize_attention_matmuls (bool): Quantize both operands of ``q @ kᵀ`` and
            ``attn @ v``. Defaults to True.
        activation_mode (str): ``'symmetric'`` (one learnable scale per tensor; signed
            or unsigned from the calibration statistics, LSQ-like, as in the paper) or
            ``'asymmetric'`` (learnable low end and range). Defaults to ``'symmetric'``.

    Raises:
        ValueError: A bit-width outside [2, 8] or not an integer, or an unknown
            ``activation_mode``.

    Examples:
        >>> QuantScheme(4, 4).name
        'W4A4'
        >>> QuantScheme(w_bits=9)
        Traceback (most recent call last):
        ...
        ValueError: w_bits must be an integer in [2, 8], got 9
    """

    w_bits: int = 8
    a_bits: int = 8
    _: KW_ONLY
    keep_input_fp: bool = True
    quantize_attention_matmuls: bool = True
    activation_mode: str = 'symmetric'

    def __post_init__(self):
        _check_bits('w_bits', self.w_bits)
        _check_bits('a_bits', self.a_bits)
        # Store plain ints (numpy integers would leak into the JSON config).
        object.__setattr__(self, 'w_bits', int(self.w_bits))
        object.__setattr__(self, 'a_bits', int(self.a_bits))
        if self.activation_mode not in ACTIVATION_MODES:
            raise ValueError(f'activation_mode must be one of {ACTIVATION_MODES}, '
                             f'got {self.activation_mode!r}')

    @property
    def name(self) -> str:
        """Short label such as ``'W4A8'``."""
        return f'W{self.w_bits}A{self.a_bits}'

    def to_dict(self) -> dict:
        """Plain, JSON-serialisable fields (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> 'QuantScheme':
        """Rebuild a scheme saved with :meth:`to_dict`."""
        return cls(**fields)
