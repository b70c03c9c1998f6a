"""``quantize_data_free``: MaskAQ (and its baselines) for a plain PyTorch/timm classifier.

Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked Attention
Alignment for Data-Free Quantization of Vision Transformers", ICML 2026. The two stages
of docs/method.md run back to back on the model's device: synthesis (Stage 1, the rounds
of :class:`~maskaq_plugin.synthesis.rounds.RoundService` that ``SampleRefreshHook`` runs
too) and QAT (Stage 2, :mod:`maskaq_plugin.qat`),
with the synthetic set refreshed against the current student every ``refresh_every``
epochs (MaskAQ only).
"""
import copy
import logging
import numbers
from functools import partial
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import nn

from .attention import make_attention_explicit
from .losses.functional import check_mask_mode
from .qat import RefreshSchedule, distill_losses_for, run_classification_qat
from .synthesis import METHOD_TERMS, ClassificationPrior, Synthesizer
from .synthesis.rounds import RoundService

DEFAULT_LR = 1e-3
# Flat overrides of the Stage 2 loss (``distill_losses_for('cls', method)``, the same
# registry-built loss as MaskAQAlgorithm's): KD + λ·L_mssim, masked (MaskAQ) or not (MimiQ).
QAT_LOSS_KEYS = ('temperature', 'mssim_weight', 'top_ratio', 'w_high', 'w_low', 'mask_mode')
SYNTHESIS_KEYS = ('lr', 'loss_weights', 'mask_mode', 'max_retries')


def _check_int(name: str, value, low: int, high: Optional[int] = None, fix: str = ''):
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and \
        value >= low and (high is None or value <= high)
    if not ok:
        rng = f'in {low}..{high}' if high is not None else f'>= {low}'
        raise ValueError(f'{name}={value!r} is invalid: pass an integer {rng}{fix}')


def _check_options(name: str, options, known: Sequence[str], example: str) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise TypeError(f'{name} must be a dict or None, got {type(options).__name__}')
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f'{name} has unknown keys {unknown}; known: {list(known)} '
                         f'(e.g. {name}={example})')
    if 'mask_mode' in options:
        check_mask_mode(options['mask_mode'])


def _validate(model, input_size, num_classes, mean, std, w_bits, a_bits, method,
              num_samples, synthesis_iters, batch_size, epochs, refresh_every, lr, seed,
              qat_loss, synthesis):
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        raise TypeError(f'model must be an nn.Module with parameters, got '
                        f'{type(model).__name__}')
    _check_int('w_bits', w_bits, 2, 8, ' (e.g. 4 or 8)')
    _check_int('a_bits', a_bits, 2, 8, ' (e.g. 4 or 8)')
    if method not in METHOD_TERMS:
        raise ValueError(f'method={method!r} is unknown: use one of {list(METHOD_TERMS)}')
    if not (isinstance(input_size, Sequence) and len(input_size) == 3
            and all(isinstance(v, numbers.Integral) and v > 0 for v in input_size)):
        raise ValueError(f'input_size={input_size!r} is invalid: pass (C, H, W), e.g. '
                         '(3, 224, 224)')
    if len(mean) != input_size[0] or len(std) != input_size[0]:
        raise ValueError(f'mean={tuple(mean)} and std={tuple(std)} must have C = '
                         f'{input_size[0]} entries (input_size={tuple(input_size)})')
    if any(s <= 0 for s in std):
        raise ValueError(f'std={tuple(std)} must be positive')
    _check_int('num_classes', num_classes, 2)
    for name, value in (('num_samples', num_samples), ('synthesis_iters', synthesis_iters),
                        ('batch_size', batch_size), ('epochs', epochs)):
        _check_int(name, value, 1)
    _check_int('seed', seed, 0)
    if refresh_every is not None:
        _check_int('refresh_every', refresh_every, 1, fix=' or None')
        if method != 'maskaq':
            raise ValueError(f"refresh_every={refresh_every} is only used by "
                             f"method='maskaq' (got {method!r}); pass refresh_every=None")
    if lr is not None and not (isinstance(lr, numbers.Real) and lr > 0):
        raise ValueError(f'lr={lr!r} is invalid: pass a positive float or None '
                         f'({DEFAULT_LR})')
    _check_options('qat_loss', qat_loss, QAT_LOSS_KEYS, "dict(mssim_weight=0.0)")
    _check_options('synthesis', synthesis, SYNTHESIS_KEYS, "dict(loss_weights=dict(ent=0))")


def quantize_data_free(model: nn.Module, *, input_size: Sequence[int], num_classes: int,
                       mean: Sequence[float], std: Sequence[float], w_bits: int,
                       a_bits: int, method: str = 'maskaq', num_samples: int,
                       synthesis_iters: int, batch_size: int, epochs: int,
                       refresh_every: Optional[int] = None, lr: Optional[float] = None,
                       seed: int = 0, progress: bool = True,
                       qat_loss: Optional[dict] = None,
                       synthesis: Optional[dict] = None, recipe: str = 'lsq',
                       quant: Optional[dict] = None) -> nn.Module:
    """Quantize a Vision-Transformer classifier without real data.

    Steps: copy ``model`` and make its attention explicit (the teacher F); build the
    fake-quantized student Q (:func:`maskaq_plugin.quant.quantize_model`); round 0
    synthesizes ``num_samples`` images without Q (MaskAQ: ``L_head + L_sem + L_tv +
    L_ent``; baselines: their own objective; ``'noise'``: plain noise), calibrates Q's
    ranges on them and, for MaskAQ, replaces them by a full synthesis with Q in the loop
    (``+ L_mad``); then ``epochs`` of QAT (SGD Nesterov 0.9, cosine to 1 % of ``lr``,
    the docs/method.md augmentations) with ``T²·KL`` (T = 5) plus, for MaskAQ, 10·``L_mssim``
    with masked weights, for MimiQ with uniform weights; PSAQ-ViT and noise use KD only
    (the registry-built loss of :class:`~maskaq_plugin.models.MaskAQAlgorithm`). A step
    with a non-finite loss is skipped; 10 in a row raise
    :class:`~maskaq_plugin.qat.NonFiniteLossError`. MaskAQ regenerates the set with the
    current Q before every ``refresh_every``-th epoch. The rounds run through
    :class:`~maskaq_plugin.synthesis.rounds.RoundService`, as in ``tools/train.py``: one
    shard per ``batch_size`` images, the same seeds, so an equivalent config
    (``bootstrap_samples=num_samples``) gives the same round 0.
    Q trains with its modules in eval mode (no dropout / stochastic depth; see
    :func:`~maskaq_plugin.qat.run_classification_qat`).

    Runs on the device of ``model``'s parameters (CUDA when the model is there). The
    input ``model`` is not modified.

    Args:
        model (nn.Module): Full-precision classifier in eval mode, e.g. a timm ViT, DeiT
            or Swin (any model with an attention supported by
            :func:`~maskaq_plugin.attention.make_attention_explicit`).
        input_size (Sequence[int]): ``(C, H, W)`` of the model's input.
        num_classes (int): Number of classes (logits).
        mean (Sequence[float]): Per-channel normalisation mean (pixels in [0, 1]).
        std (Sequence[float]): Per-channel normalisation std.
        w_bits (int): Weight bit-width, 2..8.
        a_bits (int): Activation bit-width, 2..8.
        method (str): ``'maskaq'``, ``'mimiq'``, ``'psaq'`` or ``'noise'``.
            Defaults to ``'maskaq'``.
        num_samples (int): Synthetic images per round.
        synthesis_iters (int): Optimisation steps per synthetic batch (paper: 2000).
        batch_size (int): Batch size of synthesis and QAT (paper code: 16 for QAT).
        epochs (int): QAT epochs over the synthetic set.
        refresh_every (int, optional): Refresh period R in epochs (MaskAQ only; paper:
            30 of 100). Defaults to None (no refresh).
        lr (float, optional): QAT learning rate. Defaults to None (1e-3).
        seed (int): Seed of synthesis, augmentation and shuffling. Defaults to 0.
        progress (bool): Progress bars and per-epoch log lines. Defaults to True.
        qat_loss (dict, optional): Overrides of the method's Stage 2 loss
            (:func:`~maskaq_plugin.qat.distill_losses_for` ``('cls', method)``), flat keys
            of :func:`~maskaq_plugin.qat.classification_qat_loss`: ``temperature``,
            ``mssim_weight``, ``top_ratio``, ``w_high``, ``w_low``, ``mask_mode``; e.g.
            ``dict(mssim_weight=0.0)`` (KD only) or ``dict(mask_mode='random')``.
            Defaults to None (the method's loss).
        synthesis (dict, optional): Extra :class:`~maskaq_plugin.synthesis.Synthesizer`
            options for every round: ``lr``, ``loss_weights``, ``mask_mode``,
            ``max_retries``; e.g. ``dict(loss_weights=dict(ent=0))`` (MaskAQ without
            ``L_ent``) or ``dict(mask_mode='random')``. Defaults to None.
        recipe (str): Fake quantizers of the student (the same for every method):
            ``'lsq'`` (the authors': LSQ activations with a learnable zero point,
            per-channel min-max weights) or ``'nncf'`` (NNCF's trainable scales); see
            :class:`~maskaq_plugin.quant.QuantScheme`. Defaults to ``'lsq'``.
        quant (dict, optional): Extra :class:`~maskaq_plugin.quant.QuantScheme` options,
            as the OpenMMLab wrapper's ``quant``, e.g. ``dict(act_init='minmax')``.
            Defaults to None.

    Returns:
        nn.Module: The fake-quantized model (NNCF), in eval mode.

    Examples:
        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from maskaq_plugin import quantize_data_free
        >>> from maskaq_plugin.quant import quantizer_bits
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=10).eval()
        >>> q = quantize_data_free(vit, input_size=(3, 32, 32), num_classes=10,
        ...                        mean=(0.5,) * 3, std=(0.5,) * 3, w_bits=4, a_bits=8,
        ...                        num_samples=4, synthesis_iters=2, batch_size=4,
        ...                        epochs=1, progress=False)
        >>> q.training, sorted(set(quantizer_bits(q).values()))
        (False, [('activation', 8), ('weight', 4)])
        >>> q(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    _validate(model, input_size, num_classes, mean, std, w_bits, a_bits, method,
              num_samples, synthesis_iters, batch_size, epochs, refresh_every, lr, seed,
              qat_loss, synthesis)
    from .quant.scheme import RECIPES
    if recipe not in RECIPES:
        raise ValueError(f'recipe={recipe!r} is unknown: use one of {list(RECIPES)}')
    from .quant import QuantScheme, calibrate_ranges_, quantize_model  # imports NNCF

    def log(msg: str) -> None:
        print_log(f'[quantize_data_free:{method}] {msg}', logger='current',
                  level=logging.INFO if progress else logging.DEBUG)

    device = next(model.parameters()).device
    # 1. a copy of F with explicit (recordable, quantizable) attention
    teacher = copy.deepcopy(model).eval()
    make_attention_explicit(teacher)
    # 2. student Q: fake-quantized copy of it (keeps the model's requires_grad flags)
    scheme = QuantScheme(w_bits, a_bits, recipe=recipe, **(quant or {}))
    nncf_logger = logging.getLogger('nncf')
    nncf_level = nncf_logger.level
    if not progress:  # NNCF logs the first load of its CPU extension at INFO
        nncf_logger.setLevel(logging.WARNING)
    try:
        student = quantize_model(teacher, scheme, torch.zeros(1, *input_size, device=device))
    finally:
        nncf_logger.setLevel(nncf_level)
    teacher.requires_grad_(False)  # F stays frozen

    # 3. round 0 (the round service, as in the OpenMMLab hook): bootstrap synthesis
    # without Q on num_samples images, calibration of Q on them, then (MaskAQ) round 0
    # with Q in the loop; the baselines train on the bootstrap images
    def build(with_student: bool, **options) -> Synthesizer:
        return Synthesizer(teacher, prior=ClassificationPrior(num_classes),
                           input_size=input_size, mean=mean, std=std,
                           student=student if with_student else None, **options)

    rounds = RoundService(
        build, partial(calibrate_ranges_, student), num_samples=num_samples,
        batch_size=batch_size, seed=seed, bootstrap_samples=num_samples,
        synthesis=dict(synthesis or {}, method=method, iters=synthesis_iters),
        device=device, rank=0, world=1, progress=progress,
        log=lambda msg, level: log(msg))
    images = rounds.bootstrap().images
    if method == 'maskaq':
        images = rounds.run_round(0)
    # 4. QAT on the synthetic set, refreshed (MaskAQ) every `refresh_every` epochs
    run_classification_qat(
        teacher, student, images, mean=mean, std=std, epochs=epochs, batch_size=batch_size,
        lr=DEFAULT_LR if lr is None else lr, seed=seed,
        distill_losses=distill_losses_for('cls', method), loss_kwargs=qat_loss,
        refresh=RefreshSchedule(refresh_every, epochs),
        regenerate=lambda epoch: rounds.refresh(), log=log)
    return student.eval()
