"""MaskAQ as an OpenMMLab model: a frozen FP teacher and a fake-quantized student.

Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked Attention
Alignment for Data-Free Quantization of Vision Transformers", ICML 2026. Stage 2 (QAT)
runs here, with the registry-built loss of :class:`~maskaq_plugin.qat.QATDistiller` that
``quantize_data_free`` uses too; Stage 1 (synthesis) runs in
:class:`~maskaq_plugin.synthesis.rounds.RoundService` (``SampleRefreshHook`` sequences
it), which builds its synthesizers through :meth:`MaskAQAlgorithm.build_synthesizer`.

MMEngine builds the optimizer right after the model, before any hook, so everything the
optimizer trains exists when ``__init__`` returns: the student's NNCF quantizers are
created here (ranges calibrated later, in place, by the hook, e.g. through
:meth:`MaskAQAlgorithm.calibrate_student_`).
"""
import copy
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..attention import AttentionRecorder, make_attention_explicit
from ..losses.defaults import MAX_NONFINITE_STEPS
from ..qat import (NonFiniteGuard, NonFiniteLossError, QATDistiller, apply_flat_overrides,
                   distill_losses_for, flat_view)
from ..synthesis.bank import model_fingerprint
from ..tasks import get_task
from .architecture import (build_in_scope, load_state_dict_strict, preprocessor_norm,
                           resolve_scope, task_of)

__all__ = ['MaskAQAlgorithm', 'NonFiniteLossError', 'quantize_head_layers_']

HEAD_LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


class _HeadCall(nn.Module):
    """``head(tuple(feats))`` taking the features as positional tensors.

    :func:`~maskaq_plugin.quant.calibrate_ranges_` unpacks a tuple batch into positional
    arguments; an mmpretrain head takes the tuple itself.
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, *feats):
        return self.head(tuple(feats))


def quantize_head_layers_(head: nn.Module, scheme, feats) -> List[str]:
    """Fake-quantize, in place, every Linear / Conv layer that runs in ``head(feats)``.

    Each such layer is replaced by its :func:`~maskaq_plugin.quant.quantize_model` copy,
    traced on the input it receives in ``head(tuple(feats))`` (so, with
    ``keep_input_fp=False``, its input and weight are both quantized). The head itself
    stays an ordinary module: ``forward`` / ``loss`` / ``predict`` are unchanged, and the
    state-dict keys of its weights too (the quantizers add ``__nncf_hooks`` entries).

    Why not ``quantize_model(head, ...)``: NNCF registers only top-level tensor arguments
    as graph inputs, so the first layer of a head called on a tuple of features would get
    no input quantizer.

    Args:
        head (nn.Module): The student's head (modified in place).
        scheme (QuantScheme): Its scheme (``keep_input_fp=False``).
        feats: What the head receives in the real forward (neck output).

    Returns:
        list[str]: Paths (in ``head``) of the quantized layers; empty if none runs.

    Raises:
        NotImplementedError: A layer runs more than once per forward (its later calls
            would not be quantized).
    """
    from ..quant import quantize_model
    calls: Dict[str, list] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, path=path: calls.setdefault(path, []).append(args))
        for path, m in head.named_modules() if path and isinstance(m, HEAD_LAYER_TYPES)]
    try:
        with torch.no_grad(), _eval_mode(head):
            head(tuple(feats))
    finally:
        for h in handles:
            h.remove()
    shared = [path for path, args in calls.items() if len(args) > 1]
    if shared:
        raise NotImplementedError(f'{type(head).__name__} runs {shared} more than once per '
                                  'forward: quantizing it is not supported '
                                  '(quantize_head=False)')
    for path, (args, ) in calls.items():
        parent, _, name = path.rpartition('.')
        owner = head.get_submodule(parent) if parent else head
        setattr(owner, name, quantize_model(head.get_submodule(path), scheme, tuple(args)))
    return list(calls)


@contextmanager
def _eval_mode(module: nn.Module):
    """Every submodule of ``module`` in eval mode inside the block (modes restored)."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, training in modes:
            m.training = training


@MODELS.register_module()
class MaskAQAlgorithm(BaseModel):
    """Data-free MaskAQ QAT of an mmdet / mmseg / mmpretrain model.

    Teacher and student are built from ``architecture`` and both load
    ``teacher_checkpoint``; the student's backbone is made attention-explicit and
    fake-quantized with NNCF (its image input stays full precision). A classifier's head
    is fake-quantized too (``quantize_head``, default for 'cls'): the input and weight of
    its Linear layers at ``a_bits`` / ``w_bits``, as the authors do; detectors and
    segmentors keep necks and heads in full precision (only the backbone is quantized).
    The quantized parts (:meth:`quantized_modules`: backbone, and head when quantized)
    train, weights and quantizer ranges; everything else is frozen by default.

    **Every teacher and student module runs in eval mode, also while training**
    (:meth:`train`): no dropout, no stochastic depth (drop path), no BatchNorm statistic
    updates; ``self.training`` still follows ``mode`` and gradients, ``requires_grad``
    and the quantizers' learnable ranges are unaffected. With the FP recipe's
    ``drop_path_rate`` (0.1-0.3), Q would be a noisy copy of F that the distillation then
    fits (see :func:`maskaq_plugin.qat.loop.run_classification_qat`, which trains the
    same way, as the authors' code does).

    Loss: the :class:`~maskaq_plugin.qat.QATDistiller` of ``distill_losses`` (the same
    registry-built Stage 2 loss as :func:`~maskaq_plugin.quantize_data_free`), keys
    prefixed ``distill.loss_``: ``feat`` (normalised MSE of the backbone outputs),
    ``task`` (the task outputs, :meth:`maskaq_plugin.tasks.Task.distill`; for a
    classifier, the logits of the quantized head) and ``mssim`` (``L_mssim`` of the
    backbone attention outputs), each already weighted.

    Non-finite policy (:class:`~maskaq_plugin.qat.NonFiniteGuard`, as in the API): a step
    whose loss is non-finite (on any rank) is skipped: the returned loss is a zero that
    reaches no parameter, so every gradient stays ``None`` and the optimizer leaves the
    weights and its state alone (plain ``OptimWrapper``; ``AmpOptimWrapper`` is refused
    by :meth:`train_step`: its ``GradScaler.step`` fails when no parameter got a
    gradient). Skips are counted (``distill.nonfinite_steps`` in the log);
    ``max_nonfinite_steps`` skips in a row raise :class:`NonFiniteLossError`.

    Args:
        architecture (dict): Config of the host detector / segmentor / classifier.
        teacher_checkpoint (str, optional): Path or URL of its full-precision weights,
            loaded strictly into teacher and student. None needs
            ``allow_random_teacher=True``.
        w_bits (int): Weight bit-width. Defaults to 8.
        a_bits (int): Activation bit-width. Defaults to 8.
        input_size (Sequence[int]): ``(C, H, W)`` for NNCF tracing and synthesis.
            Defaults to (3, 224, 224).
        distill_losses (dict, optional): The Stage 2 loss, MMRazor style: term name
            (``feat``, ``task``, ``mssim``) -> registered loss config, e.g.
            ``dict(task=dict(type='KDLoss', temperature=5.0, loss_weight=1.0),
            mssim=dict(type='MaskedAttentionSSIMLoss', loss_weight=10.0))``.
            Defaults to None: the task's (``DISTILL_LOSSES`` of
            :mod:`maskaq_plugin.losses.defaults`).
        kd (dict, optional): Flat shorthand applied on top of ``distill_losses``:
            weights ``feat``, ``task``, ``mssim`` (λ), the task term's ``temperature``,
            and ``top_ratio``, ``w_high``, ``w_low``, ``mask_mode`` of ``mssim``
            ('informative'; 'random' is the ablation that weights as many random
            tokens). Defaults: det/seg ``feat=1, task=1, mssim=10, T=1``; cls
            ``feat=0, task=1, mssim=10, T=5``.
        quant (dict, optional): Extra ``QuantScheme`` options (``keep_input_fp``,
            ``quantize_attention_matmuls``, ``recipe``, ...), for the backbone and the
            head (whose scheme always has ``keep_input_fp=False``: the head's input is a
            backbone feature, not the image). Defaults to None.
        quantize_head (bool, optional): Fake-quantize the student's ``head`` (same bits,
            input and weight of every Linear / Conv in it) and train it (weights and
            ranges; a neck stays frozen). Only classifiers (mmpretrain, one ``head``)
            support it. Defaults to None: True for 'cls' (as in the paper), False for
            'det' / 'seg' (dense tasks quantize only the backbone, by design).
        train_heads (bool): Also make the student's neck and heads trainable
            (``requires_grad``; full precision unless quantized). They still run in eval
            mode like every other module (BatchNorm statistics stay, no dropout).
            Defaults to False (frozen).
        max_nonfinite_steps (int): Consecutive non-finite steps tolerated. Defaults to 10.
        allow_random_teacher (bool): Permit ``teacher_checkpoint=None`` (tests,
            benchmarks). Defaults to False.
        data_preprocessor (dict, optional): Defaults to the architecture's.
        init_cfg (dict, optional): Unused (weights come from the checkpoint).
    """

    def __init__(self, architecture: dict, teacher_checkpoint: Optional[str] = None,
                 w_bits: int = 8, a_bits: int = 8,
                 input_size: Sequence[int] = (3, 224, 224),
                 distill_losses: Optional[dict] = None, kd: Optional[dict] = None,
                 quant: Optional[dict] = None, quantize_head: Optional[bool] = None,
                 train_heads: bool = False,
                 max_nonfinite_steps: int = MAX_NONFINITE_STEPS,
                 allow_random_teacher: bool = False,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        from ..quant import QuantScheme, quantize_model
        if teacher_checkpoint is None and not allow_random_teacher:
            raise ValueError('teacher_checkpoint is None: MaskAQ distils a trained model. '
                             'Pass its checkpoint path/URL (allow_random_teacher=True only '
                             'for tests and benchmarks).')
        if len(input_size) != 3:
            raise ValueError(f'input_size must be (C, H, W), got {input_size!r}')
        guard = NonFiniteGuard(max_nonfinite_steps)  # validates early
        scheme = QuantScheme(w_bits, a_bits, **(quant or {}))  # validates early
        architecture = copy.deepcopy(dict(architecture))
        scope = resolve_scope(architecture)
        if data_preprocessor is None:
            data_preprocessor = architecture.get('data_preprocessor')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = build_in_scope(data_preprocessor, scope)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)

        teacher = build_in_scope(architecture, scope)
        self.task = task_of(teacher)
        self.task_spec = get_task(self.task)
        distill_losses = apply_flat_overrides(
            distill_losses_for(self.task) if distill_losses is None else distill_losses, kd)
        distiller = QATDistiller(distill_losses)  # validates before the NNCF work
        explicit_head = quantize_head is not None
        if quantize_head is None:
            quantize_head = self.task_spec.quantize_head
        if quantize_head and not self.task_spec.quantize_head:
            raise ValueError(f'quantize_head=True is supported for classifiers only; a '
                             f'{self.task} model quantizes its backbone only (got '
                             f'{type(teacher).__name__})')
        if teacher_checkpoint is not None:
            load_state_dict_strict(teacher, teacher_checkpoint)
        make_attention_explicit(teacher.backbone)
        teacher.eval()
        student = copy.deepcopy(teacher)
        example = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
        student.backbone = quantize_model(student.backbone, scheme, example)
        head_scheme = None
        if quantize_head:
            # The head's input is a backbone feature: nothing in it is the raw image.
            head_scheme = QuantScheme(w_bits, a_bits,
                                      **dict(quant or {}, keep_input_fp=False))
            with torch.no_grad():
                feats = self._neck(teacher, teacher.backbone(example))
            if not quantize_head_layers_(student.head, head_scheme, feats):
                if explicit_head:
                    raise ValueError(f'quantize_head=True but {type(student.head).__name__} '
                                     'runs no Linear / Conv layer; pass quantize_head=False')
                print_log(f'{type(student.head).__name__} runs no Linear / Conv layer: '
                          'the head stays full precision', logger='current', level=30)
                quantize_head, head_scheme = False, None
        teacher.requires_grad_(False)
        trained = ('backbone.', 'head.') if quantize_head else ('backbone.',)
        if not train_heads:
            for name, p in student.named_parameters():
                if not name.startswith(trained):
                    p.requires_grad_(False)
        self.teacher, self.student = teacher, student

        self.scheme, self.head_scheme, self.scope = scheme, head_scheme, scope
        self.quantize_head = bool(quantize_head)
        self.input_size = tuple(int(v) for v in input_size)
        self.teacher_checkpoint = teacher_checkpoint
        self.train_heads = train_heads
        self.distill_losses = distill_losses
        self.distiller = distiller
        self.guard = guard
        self.max_nonfinite_steps = max_nonfinite_steps
        self.train(self.training)  # teacher and student in eval mode from the start

    @property
    def kd(self) -> dict:
        """The flat view of ``distill_losses`` (:func:`~maskaq_plugin.qat.flat_view`)."""
        return flat_view(self.distill_losses)

    @property
    def nonfinite_in_row(self) -> int:
        """Non-finite steps skipped in a row (see the class docstring)."""
        return self.guard.in_row

    @property
    def nonfinite_total(self) -> int:
        """Non-finite steps skipped in all."""
        return self.guard.total

    # ------------------------------------------------------------ quantized parts
    def quantized_modules(self) -> List[Tuple[str, nn.Module]]:
        """``(name, module)`` of every quantized part of the student, in forward order:
        ``('backbone', student.backbone)`` (NNCF-wrapped) and, when ``quantize_head``,
        ``('head', student.head)`` (an ordinary head whose Linear / Conv layers are
        NNCF-wrapped, see :func:`quantize_head_layers_`). Names are attributes of
        ``self.student``; :func:`maskaq_plugin.quant.iter_quantizers`,
        ``quantizer_info`` and ``quantizers_disabled`` take either part. Calibrate them
        with :meth:`calibrate_student_` (the head runs on features, not images)."""
        parts = [('backbone', self.student.backbone)]
        if self.quantize_head:
            parts.append(('head', self.student.head))
        return parts

    @torch.no_grad()
    def head_inputs(self, images: Tensor) -> Tuple[Tensor, ...]:
        """What the student's head receives on ``images`` with its backbone in full
        precision: ``student.neck(student.backbone(images))`` (or the backbone output
        when there is no neck), quantizers disabled, modules in eval mode, no grad.

        Before QAT this is exactly the teacher's feature (the student is a copy of it).
        """
        from ..quant import quantizers_disabled
        with _eval_mode(self.student), quantizers_disabled(self.student.backbone):
            feats = self._neck(self.student, self.student.backbone(images))
        return tuple(feats) if isinstance(feats, (tuple, list)) else (feats,)

    def calibrate_student_(self, batches: Union[Tensor, Iterable[Tensor]], *,
                           subset_size: Optional[int] = None) -> 'MaskAQAlgorithm':
        """Set the ranges of every student quantizer from image batches, in place.

        Calls :func:`maskaq_plugin.quant.calibrate_ranges_` on each part of
        :meth:`quantized_modules`: the backbone on the images, the head (when quantized)
        on :meth:`head_inputs` of the same images (the features a full-precision backbone
        produces, as every range is calibrated with the quantizers disabled). The
        quantizer parameters keep their identity (an optimizer built before still trains
        them); collective under ``torch.distributed`` (every rank must call it).

        Args:
            batches (Tensor | Iterable[Tensor]): One ``(N, C, H, W)`` batch of
                preprocessed images (what ``data_preprocessor`` returns as ``inputs``)
                or an iterable of them, on the student's device.
            subset_size (int, optional): Use at most this many images. Defaults to None
                (``calibrate_ranges_``'s default, 256).

        Returns:
            MaskAQAlgorithm: ``self``.
        """
        from ..quant import calibrate_ranges_
        from ..quant.calibrate import DEFAULT_SUBSET_SIZE
        limit = DEFAULT_SUBSET_SIZE if subset_size is None else int(subset_size)
        used, seen = [], 0
        for batch in ([batches] if isinstance(batches, Tensor) else batches):
            if seen >= limit:
                break
            used.append(batch[:limit - seen])
            seen += used[-1].shape[0]
        if not used:
            raise ValueError('calibrate_student_ got no image batch')
        for name, module in self.quantized_modules():
            if name == 'backbone':
                calibrate_ranges_(module, used, subset_size=limit)
            else:  # head: the features of those images, one tuple of tensors per batch
                calibrate_ranges_(_HeadCall(module).eval(),
                                  [self.head_inputs(b) for b in used], subset_size=limit)
        return self

    # ------------------------------------------------------------- accessors
    @property
    def student_backbone_quantized(self) -> nn.Module:
        """The NNCF-wrapped student backbone (its quantizers and weights train).

        Not the only quantized part when ``quantize_head``: see :meth:`quantized_modules`.
        """
        return self.student.backbone

    @property
    def norm(self) -> Dict[str, object]:
        """The data preprocessor's ``mean``/``std`` (0-255, model order), ``bgr_to_rgb``."""
        return preprocessor_norm(self.data_preprocessor)

    def fingerprint(self) -> dict:
        """Identity of this model for the sample bank (plain types)."""
        norm = self.norm
        arch = f'{type(self.teacher).__name__}/{type(self.teacher.backbone).__name__}'
        return model_fingerprint(arch, self.input_size, norm['mean'], norm['std'],
                                 norm['bgr_to_rgb'], self.task)

    def synthesis_prior(self):
        """The task prior (``L_sem``) of Stage 1 for this architecture."""
        return self.task_spec.prior(self.teacher, self.input_size[1:])

    def build_synthesizer(self, with_student: bool = True, **kwargs):
        """Stage 1 synthesizer: teacher + prior, and the quantized student backbone
        (``L_mad``) when ``with_student``. ``kwargs``: ``method``, ``iters``, ``lr``,
        ``loss_weights``, ``progress`` of :class:`~maskaq_plugin.synthesis.Synthesizer`."""
        from ..synthesis import Synthesizer
        norm = self.norm
        return Synthesizer(self.teacher, prior=self.synthesis_prior(),
                           input_size=self.input_size,
                           mean=[m / 255.0 for m in norm['mean']],
                           std=[s / 255.0 for s in norm['std']],
                           student=self.student.backbone if with_student else None,
                           teacher_attn_root=self.teacher.backbone, **kwargs)

    # ------------------------------------------------------------ nn.Module
    def init_weights(self) -> None:
        """No-op: teacher and student weights come from ``teacher_checkpoint``.

        MMEngine's Runner calls ``init_weights()`` after ``before_run``; re-initialising
        would erase the loaded weights and the calibrated ranges.
        """

    def train(self, mode: bool = True) -> 'MaskAQAlgorithm':
        """Set ``self.training = mode`` (MMEngine reads it); teacher and student stay in
        eval mode whatever ``mode`` is (see the class docstring)."""
        super().train(mode)
        self.teacher.eval()
        self.student.eval()
        return self

    # -------------------------------------------------------------- forward
    def train_step(self, data, optim_wrapper):
        """MMEngine's step; ``AmpOptimWrapper`` is refused (see the class docstring)."""
        if type(optim_wrapper).__name__ == 'AmpOptimWrapper':
            raise TypeError(
                'MaskAQAlgorithm does not support AmpOptimWrapper: a skipped non-finite '
                'step returns a loss that reaches no parameter, and GradScaler.step then '
                'fails ("No inf checks were recorded"); use optim_wrapper type '
                "'OptimWrapper' (fp32), i.e. drop --amp")
        return super().train_step(data, optim_wrapper)

    def forward(self, inputs: Tensor, data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.student.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.student(inputs, data_samples, mode='tensor')
        raise RuntimeError(f'invalid mode {mode!r}; use loss, predict or tensor')

    def _neck(self, model: nn.Module, feats):
        neck = getattr(model, 'neck', None)
        return neck(feats) if isinstance(neck, nn.Module) else feats

    def loss(self, inputs: Tensor, data_samples: Optional[list] = None) -> Dict[str, Tensor]:
        """Distillation losses on a batch of synthetic images (see the class docstring)."""
        with torch.no_grad(), AttentionRecorder(self.teacher.backbone, detach=True) as rec_t:
            feats_t = self.teacher.backbone(inputs)
        with AttentionRecorder(self.student.backbone) as rec_s:
            feats_s = self.student.backbone(inputs)
        terms = self.distiller(
            feats=(feats_t, feats_s), records=(rec_t.records, rec_s.records),
            task=lambda loss: self._task_loss(self._neck(self.teacher, feats_t),
                                              self._neck(self.student, feats_s),
                                              data_samples))
        return self._guard_finite({f'distill.loss_{k}': v for k, v in terms.items()}, inputs)

    def _task_loss(self, x_t, x_s, data_samples) -> Tensor:
        """The weighted ``task`` term on the neck outputs of teacher and student."""
        return self.task_spec.distill(self.distiller.losses['task'], self.teacher,
                                      self.student, x_t, x_s, data_samples)

    def _guard_finite(self, losses: Dict[str, Tensor], like: Tensor) -> Dict[str, Tensor]:
        """Skip (and count) a step whose loss is non-finite on any rank."""
        if self.guard.check(losses):
            return losses
        # A zero that reaches no parameter: gradients stay None, the optimizer skips all.
        return {'distill.loss_skipped': like.new_zeros((), requires_grad=True),
                'distill.nonfinite_steps': like.new_tensor(float(self.guard.total))}
