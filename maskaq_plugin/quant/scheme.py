"""The quantization scheme of MaskAQ's Stage 2 (see docs/method.md, "Stage 2: QAT").

Weights are quantized per output channel, symmetrically, at ``w_bits``; activations per
tensor at ``a_bits``. The model's image input (the input of the patch embedding) stays in
full precision; every Linear/Conv input and weight and both operands of both attention
matmuls (``q @ kᵀ`` and ``attn @ v``) are quantized.

Two recipes of fake quantizers, both NNCF quantizer modules:

* ``'lsq'`` (default; the authors' released code): activations LSQ with a learnable
  step and zero point and LSQ's gradient scale; weights per-channel min-max recomputed
  from the current weights on every forward, no learned range (:mod:`.lsq`).
* ``'nncf'`` (this project's first recipe): NNCF's own trainable quantizers: weights
  narrow-range symmetric with a learned per-channel scale, activations symmetric (or
  asymmetric) with a learned scale, NNCF's raw gradient.

This module does not import NNCF, so the scheme can be built and validated cheaply.
"""
import numbers
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Optional

MIN_BITS = 2
MAX_BITS = 8
ACTIVATION_MODES = ('symmetric', 'asymmetric')
RECIPES = ('lsq', 'nncf')
ACT_INITS = ('lsq', 'minmax')


def _check_bits(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f'{name} must be an integer in [{MIN_BITS}, {MAX_BITS}], '
                         f'got {value!r}')


@dataclass(frozen=True)
class QuantScheme:
    """Bit-widths and placement options of the fake-quantized student.

    Args:
        w_bits (int): Weight bit-width, per-channel symmetric (``'lsq'``: ``2**w_bits``
            levels ``[-2^(b-1), 2^(b-1)-1]``; ``'nncf'``: narrow range, ``2**w_bits - 1``
            levels). Integer in [2, 8]. Defaults to 8.
        a_bits (int): Activation bit-width, per-tensor (``2**a_bits`` levels), for the
            inputs of every Linear/Conv and both operands of both attention matmuls.
            Integer in [2, 8]. Defaults to 8.
        keep_input_fp (bool): Leave the model's image input (the input of the patch
            embedding and anything computed from the raw input alone) unquantized.
            Defaults to True.
        quantize_attention_matmuls (bool): Quantize both operands of ``q @ kᵀ`` and
            ``attn @ v``. Defaults to True.
        recipe (str): ``'lsq'`` (the authors' quantizers, see the module docstring) or
            ``'nncf'`` (NNCF's trainable quantizers). Defaults to ``'lsq'``.
        activation_mode (str, optional): Recipe ``'nncf'`` only: ``'symmetric'`` (one
            learnable scale per tensor; signed or unsigned from the calibration
            statistics) or ``'asymmetric'`` (learnable low end and range). Defaults to
            None (``'symmetric'`` for ``'nncf'``; ``'lsq'`` has its own zero point).
        act_init (str, optional): Recipe ``'lsq'`` only: how the activation step and
            zero point start. ``'lsq'`` (the authors': ``2·mean|x|/√Q_p`` on the first
            batch) or ``'minmax'`` (ours: the grid spans the mean min-max range of the
            calibration batches; measured better at small QAT budgets, see
            docs/benchmarks.md). Defaults to None (``'lsq'``).

    Raises:
        ValueError: A bit-width outside [2, 8] or not an integer, an unknown ``recipe``,
            ``activation_mode`` or ``act_init``, or an option of the other recipe.

    Examples:
        >>> QuantScheme(4, 4).name
        'W4A4'
        >>> QuantScheme(4, 4).recipe, QuantScheme(4, 4, recipe='nncf').activation_mode
        ('lsq', 'symmetric')
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
    recipe: str = 'lsq'
    activation_mode: Optional[str] = None
    act_init: Optional[str] = None

    def __post_init__(self):
        _check_bits('w_bits', self.w_bits)
        _check_bits('a_bits', self.a_bits)
        # Store plain ints (numpy integers would leak into the JSON config).
        object.__setattr__(self, 'w_bits', int(self.w_bits))
        object.__setattr__(self, 'a_bits', int(self.a_bits))
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES} ('lsq': the authors' "
                             f"quantizers; 'nncf': NNCF's), got {self.recipe!r}")
        if self.recipe == 'lsq':
            if self.act_init is None:
                object.__setattr__(self, 'act_init', 'lsq')
            if self.act_init not in ACT_INITS:
                raise ValueError(f'act_init must be one of {ACT_INITS}, got {self.act_init!r}')
            if self.activation_mode is not None:
                raise ValueError(
                    f"activation_mode={self.activation_mode!r} applies to recipe='nncf' only "
                    "(recipe='lsq' learns a step and a zero point per tensor); drop it or "
                    "pass recipe='nncf'")
        else:
            if self.act_init is not None:
                raise ValueError(f"act_init={self.act_init!r} applies to recipe='lsq' only "
                                 "(recipe='nncf' calibrates mean min-max ranges)")
            if self.activation_mode is None:
                object.__setattr__(self, 'activation_mode', 'symmetric')
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
        """Rebuild a scheme saved with :meth:`to_dict`.

        A dict without ``recipe`` was saved before recipes existed: it is ``'nncf'``.
        """
        fields = dict(fields)
        fields.setdefault('recipe', 'nncf')
        return cls(**fields)
