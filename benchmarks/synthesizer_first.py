"""The first version of ``maskaq_plugin/synthesis/synthesizer.py``, frozen: the ``before`` of
the synthesis-speed benchmark (``python tools/benchmark.py synthesis``), loaded by
:func:`benchmarks.synthesis_speed.load_synthesizer` as a module of
``maskaq_plugin.synthesis`` (its relative imports resolve there). Not used by the package.
It differs from the current synthesizer in speed only: Q's fake quantizers back-propagate
through their own parameters too (see ``Synthesizer._student_backward``), and the loss terms
are computed inline (now ``SynthesisObjective``); the terms and images are bit-identical.

Original docstring: Stage 1 of MaskAQ: optimise noise images into informative synthetic
data.

Qian et al., "Selective Coupling of Decoupled Informative Regions: Masked Attention
Alignment for Data-Free Quantization of Vision Transformers", ICML 2026 (docs/method.md,
"Stage 1"). The baselines of the same pipeline are selected with ``method``: MimiQ
(Choi et al.) and PSAQ-ViT (Li et al., ECCV 2022) objectives, or plain noise.

Per iteration: augment the batch (:mod:`.augment`), run the teacher F once through the
task prior while recording its attention scores, run the quantized student Q (MaskAQ
with a student only), sum the weighted losses, take an AdamW step on the images and
clamp them to the valid pixel range. Everything is batched; F and Q are frozen.
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..attention import AttentionRecorder, group_records
from ..losses.functional import (informative_region_mask, inter_head_ssim_loss,
                                 masked_attention_difference, patch_similarity_entropy,
                                 total_variation)
from ..utils.seeding import derive_seed
from .augment import synthesis_augment
from .priors.base import TaskPrior

DEFAULT_LOSS_WEIGHTS = dict(head=1.0, sem=1.0, tv=2.5e-5, ent=1.0, mad=0.1)
METHOD_TERMS = {
    'maskaq': ('head', 'sem', 'tv', 'ent', 'mad'),  # 'mad' only with a student
    'mimiq': ('head', 'sem', 'tv'),
    'psaq': ('ent', 'sem', 'tv'),
    'noise': (),
}
MASK_RATIO = (0.5, 0.1)  # ρ_t, linear over the iterations
MASK_DROP = 0.3
_CHECK_EVERY = 10  # iterations between finiteness checks / progress updates


@dataclass
class SynthesisResult:
    """What :meth:`Synthesizer.synthesize` returns.

    Attributes:
        images (Tensor): ``(N, C, H, W)`` synthetic images in normalised space, on CPU.
        targets (list): One random target per image (class index for classification).
        masks (Tensor | None): ``(N, P)`` informative-region mask of the last iteration
            (first group of layers; window attention: the windows of an image side by
            side), on CPU; None without a student.
        losses (dict[str, float]): The last iteration's loss terms (and ``loss``, their
            weighted sum) averaged over batches; empty for ``method='noise'``.
    """
    images: Tensor
    targets: List[Any]
    masks: Optional[Tensor]
    losses: Dict[str, float]


def batch_seed(seed: int, batch_index: int, rank: int = 0, attempt: int = 0) -> int:
    """Seed of one batch: a hash of ``(seed, rank, batch_index, attempt)``."""
    return derive_seed(seed, rank, batch_index, attempt, bits=63)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class Synthesizer:
    """Stage 1 synthesizer (docs/method.md, "Stage 1").

    Args:
        teacher (nn.Module): Full-precision model F with explicit attention
            (:func:`~maskaq_plugin.attention.make_attention_explicit`).
        prior (TaskPrior): Task prior giving ``L_sem`` (runs the teacher once).
        input_size (Sequence[int]): ``(C, H, W)`` of the images.
        mean (Sequence[float]): Per-channel normalisation mean μ (pixels in [0, 1]).
        std (Sequence[float]): Per-channel normalisation std σ.
        student (nn.Module, optional): Quantized model Q (or its backbone); enables
            ``L_mad`` and the mask (``method='maskaq'`` only). Defaults to None.
        teacher_attn_root (nn.Module, optional): Module of the teacher whose attention
            is recorded (e.g. ``detector.backbone``). Defaults to ``teacher``.
        student_forward (Callable, optional): ``f(x)`` running the student on the
            augmented batch. Defaults to ``student(x)``.
        method (str): ``'maskaq'`` | ``'mimiq'`` | ``'psaq'`` | ``'noise'``.
            Defaults to ``'maskaq'``.
        iters (int): Iterations T per batch. Defaults to 2000.
        lr (float): AdamW learning rate, cosine-decayed to ``lr / 100``. Defaults to 0.1.
        loss_weights (dict, optional): Overrides of ``DEFAULT_LOSS_WEIGHTS`` (keys
            ``head, sem, tv, ent, mad``); a term with weight 0 is not computed.
        max_retries (int): Regenerations of a non-finite batch before giving up.
            Defaults to 3.
        progress (bool): Show a tqdm bar with the loss terms. Defaults to True.

    Examples:
        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from maskaq_plugin.attention import make_attention_explicit
        >>> from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=10).eval()
        >>> _ = make_attention_explicit(vit)
        >>> syn = Synthesizer(vit, prior=ClassificationPrior(10), input_size=(3, 32, 32),
        ...                   mean=(0.5,) * 3, std=(0.5,) * 3, iters=4, progress=False)
        >>> res = syn.synthesize(6, 4, seed=0)
        >>> tuple(res.images.shape), sorted(res.losses)
        ((6, 3, 32, 32), ['ent', 'head', 'loss', 'sem', 'tv'])
    """

    def __init__(self, teacher: nn.Module, *, prior: TaskPrior, input_size: Sequence[int],
                 mean: Sequence[float], std: Sequence[float],
                 student: Optional[nn.Module] = None,
                 teacher_attn_root: Optional[nn.Module] = None,
                 student_forward: Optional[Callable[[Tensor], Any]] = None,
                 method: str = 'maskaq', iters: int = 2000, lr: float = 0.1,
                 loss_weights: Optional[Dict[str, float]] = None, max_retries: int = 3,
                 progress: bool = True):
        if method not in METHOD_TERMS:
            raise ValueError(f'method={method!r} is unknown; use one of {list(METHOD_TERMS)}')
        if student is not None and method != 'maskaq':
            raise ValueError(f"method={method!r} does not use a student (only 'maskaq' "
                             'has L_mad); pass student=None')
        if len(input_size) != 3 or len(mean) != input_size[0] or len(std) != input_size[0]:
            raise ValueError(f'input_size must be (C, H, W) with len(mean) == len(std) == C, '
                             f'got input_size={tuple(input_size)}, mean={tuple(mean)}, '
                             f'std={tuple(std)}')
        if not isinstance(iters, int) or iters < 1:
            raise ValueError(f'iters must be a positive int, got {iters!r}')
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        unknown = set(loss_weights or {}) - set(weights)
        if unknown:
            raise ValueError(f'unknown loss_weights keys {sorted(unknown)}; known: '
                             f'{sorted(weights)}')
        weights.update(loss_weights or {})
        self.terms = [t for t in METHOD_TERMS[method]
                      if weights[t] != 0 and (t != 'mad' or student is not None)]
        self.weights = weights
        self.teacher, self.prior, self.student, self.method = teacher, prior, student, method
        self.teacher_attn_root = teacher_attn_root if teacher_attn_root is not None else teacher
        self.student_forward = student_forward or student
        self.input_size = tuple(int(v) for v in input_size)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.lower, self.upper = (0 - mean_t) / std_t, (1 - mean_t) / std_t  # (1, C, 1, 1)
        self.iters, self.lr, self.max_retries, self.progress = iters, lr, max_retries, progress

    # ------------------------------------------------------------------ public
    def synthesize(self, num_samples: int, batch_size: int, *, seed: int) -> SynthesisResult:
        """Synthesize ``num_samples`` images in batches of ``batch_size``.

        Batch ``i`` is generated from a generator seeded with
        ``batch_seed(seed, i, rank, attempt)``: the same seed gives the same images on
        the same device; each distributed rank draws its own shard.
        """
        if num_samples < 1 or batch_size < 1 or seed < 0:
            raise ValueError(f'need num_samples >= 1, batch_size >= 1 and seed >= 0, got '
                             f'{num_samples}, {batch_size}, {seed}')
        device = next(self.teacher.parameters()).device
        lower, upper = self.lower.to(device), self.upper.to(device)
        num_batches = math.ceil(num_samples / batch_size)
        rank = _rank()
        images, targets, masks, losses = [], [], [], []
        frozen = self._freeze()
        bar = tqdm(total=num_batches * (self.iters if self.terms else 1), leave=False,
                   desc=f'synthesis[{self.method}]', disable=not self.progress)
        try:
            with torch.enable_grad():
                for b in range(num_batches):
                    size = min(batch_size, num_samples - b * batch_size)
                    for attempt in range(self.max_retries + 1):
                        gens = self._generators(batch_seed(seed, b, rank, attempt), device)
                        out = self._batch(size, gens, lower, upper, bar)
                        if out['ok']:
                            break
                        bar.total += self.iters
                    else:
                        raise RuntimeError(
                            f'synthesis batch {b} (seed={seed}, rank={rank}, '
                            f'method={self.method!r}) stayed non-finite in '
                            f'{self.max_retries + 1} attempts; last loss terms: '
                            f'{out["losses"]}. Lower lr ({self.lr}) or the loss weights '
                            f'({self.weights}), or check the task prior.')
                    images.append(out['x'].cpu())
                    t = out['targets']
                    targets.extend(t.detach().cpu().tolist() if torch.is_tensor(t) else t)
                    if out['mask'] is not None:
                        masks.append(out['mask'].reshape(size, -1).cpu())
                    losses.append(out['losses'])
        finally:
            bar.close()
            self._restore(frozen)
        mean_losses = {k: float(np.mean([d[k] for d in losses])) for k in losses[0]}
        return SynthesisResult(torch.cat(images), targets,
                               torch.cat(masks) if masks else None, mean_losses)

    # ---------------------------------------------------------------- internals
    def _freeze(self) -> list:
        """Put F and Q in eval mode without parameter gradients; remember their state."""
        state = []
        for model in (self.teacher, self.student):
            if model is None:
                continue
            state.append(([(m, m.training) for m in model.modules()],
                          [(p, p.requires_grad) for p in model.parameters()]))
            model.eval()  # some train() overrides (mmdet/mmseg Swin) return None
            model.requires_grad_(False)
        return state

    @staticmethod
    def _restore(state: list) -> None:
        for modes, grads in state:
            for m, training in modes:
                m.training = training
            for p, flag in grads:
                p.requires_grad_(flag)

    @staticmethod
    def _generators(seed: int, device: torch.device) -> tuple:
        cpu = torch.Generator().manual_seed(seed)
        if device.type == 'cpu':
            return cpu, cpu
        return cpu, torch.Generator(device).manual_seed(seed ^ 0x5EED)

    def _batch(self, size: int, gens: tuple, lower: Tensor, upper: Tensor, bar) -> dict:
        g_cpu, g_dev = gens
        device = lower.device
        x = torch.randn(size, *self.input_size, generator=g_cpu).to(device)
        targets = self.prior.sample(size, g_cpu)
        if not self.terms:  # 'noise': plain N(0, 1), clamped
            bar.update(1)
            return dict(ok=True, x=torch.maximum(torch.minimum(x, upper), lower),
                        targets=targets, mask=None, losses={})
        x.requires_grad_(True)
        opt = torch.optim.AdamW([x], lr=self.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=1e-6)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.iters,
                                                           eta_min=self.lr * 1e-2)
        bad = torch.zeros((), dtype=torch.bool, device=device)
        for it in range(self.iters):
            x_aug = synthesis_augment(x, it, self.iters, generator=g_dev, shift_generator=g_cpu)
            terms, mask = self._losses(x, x_aug, targets, it, g_dev)
            loss = sum(self.weights[k] * v for k, v in terms.items())
            bad |= ~torch.isfinite(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, upper), lower))
            last = it == self.iters - 1
            if last or (it + 1) % _CHECK_EVERY == 0:
                values = {k: v.item() for k, v in terms.items()}
                values['loss'] = loss.item()
                bar.set_postfix({k: f'{v:.3g}' for k, v in values.items()}, refresh=False)
                if bad.item() or (last and not torch.isfinite(x).all()):
                    bar.update(self.iters - it)
                    return dict(ok=False, losses=values)
            bar.update(1)
        return dict(ok=True, x=x.detach(), targets=targets, mask=mask, losses=values)

    def _losses(self, x: Tensor, x_aug: Tensor, targets: Any, it: int,
                generator: torch.Generator) -> tuple:
        """The active loss terms (unweighted) and the mask of the first group (or None)."""
        terms = {}
        with AttentionRecorder(self.teacher_attn_root) as rec_f:
            sem = self.prior.loss(self.teacher, x_aug, targets)
        if 'sem' in self.terms:
            terms['sem'] = sem
        if 'tv' in self.terms:
            terms['tv'] = total_variation(x)  # un-augmented images
        records_f = rec_f.records
        groups = group_records(records_f)
        index = {id(r): i for i, r in enumerate(records_f)}
        if 'head' in self.terms:  # per layer: groups weighted by their number of layers
            terms['head'] = sum(len(g) * inter_head_ssim_loss(
                [r.scores for r in g], has_cls_token=g[0].has_cls_token,
                grid=_key_grid(g[0])) for g in groups) / len(records_f)
        if 'ent' in self.terms:
            terms['ent'] = sum(len(g) * patch_similarity_entropy(
                [r.scores for r in g], has_cls_token=g[0].has_cls_token,
                generator=generator) for g in groups) / len(records_f)
        mask = None
        if 'mad' in self.terms:
            with AttentionRecorder(self.student) as rec_q:
                self.student_forward(x_aug)
            records_q = rec_q.records
            if len(records_q) != len(records_f):
                raise RuntimeError(f'the student recorded {len(records_q)} attention layers '
                                   f'but the teacher {len(records_f)}; pass the matching '
                                   'teacher_attn_root / student')
            ratio = MASK_RATIO[0] + (MASK_RATIO[1] - MASK_RATIO[0]) * it / max(
                self.iters - 1, 1)
            mads = []
            for g in groups:  # mask and L_mad per group of equally shaped layers
                has_cls = g[0].has_cls_token
                scores_f = [r.scores for r in g]
                m = informative_region_mask(scores_f, ratio=ratio, has_cls_token=has_cls,
                                            drop=MASK_DROP, generator=generator)
                scores_q = [records_q[index[id(r)]].scores for r in g]
                mads.append(masked_attention_difference(scores_f, scores_q, m,
                                                        has_cls_token=has_cls))
                mask = m if mask is None else mask
            terms['mad'] = torch.stack(mads).mean()
        return terms, mask


def _key_grid(record) -> tuple:
    """``(h, w)`` of the patch keys: a square when possible, else one row."""
    num_keys = record.scores.shape[-1] - int(record.has_cls_token)
    side = math.isqrt(num_keys)
    return (side, side) if side * side == num_keys else (1, num_keys)
