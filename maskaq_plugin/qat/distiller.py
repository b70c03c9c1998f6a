"""The Stage 2 (QAT) loss, built from the registry, for both entry points.

Configured as MMRazor's ``distill_losses`` (docs/method.md, "Stage 2"): a dict from a
term name to the config of a registered loss (:mod:`maskaq_plugin.losses`),
``dict(feat=dict(type='FeatureMSELoss', loss_weight=1.0), task=dict(type='KDLoss',
temperature=5.0, loss_weight=1.0), mssim=dict(type='MaskedAttentionSSIMLoss',
loss_weight=10.0, ...))``. The terms:

* ``feat`` — the backbone outputs of F and Q (dense tasks);
* ``task`` — the task outputs: what :meth:`maskaq_plugin.tasks.Task.distill` (OpenMMLab
  wrapper) or the classifier's logits (``quantize_data_free``) give it;
* ``mssim`` — ``L_mssim`` of the attention records of both backbones, computed per group
  of equally shaped layers (:func:`~maskaq_plugin.qat.mssim_from_records`) with the
  options of its module.

The defaults of each task and the baselines as configurations of them live in
:mod:`maskaq_plugin.losses.defaults` (``DISTILL_LOSSES``, ``METHOD_LOSSES``).
"""
import copy
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .. import losses as _losses  # noqa: F401  (registers the loss modules)
from ..attention import AttentionRecord, group_records
from ..losses.defaults import DISTILL_LOSSES, METHOD_LOSSES
from ..losses.functional import MASK_MODES, masked_attention_ssim

TERMS = ('feat', 'task', 'mssim')
# The flat shorthand (``MaskAQAlgorithm(kd=...)``, ``quantize_data_free(qat_loss=...)``):
# key -> (term, option); ``mssim_weight`` is the API's name of ``mssim``.
FLAT_KEYS = {
    'feat': ('feat', 'loss_weight'), 'task': ('task', 'loss_weight'),
    'mssim': ('mssim', 'loss_weight'), 'mssim_weight': ('mssim', 'loss_weight'),
    'temperature': ('task', 'temperature'), 'top_ratio': ('mssim', 'top_ratio'),
    'w_high': ('mssim', 'w_high'), 'w_low': ('mssim', 'w_low'),
    'mask_mode': ('mssim', 'mask_mode'),
}


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for name, cfg in overrides.items():
        out[name] = dict(out.get(name) or {}, **cfg) if cfg is not None else None
    return {k: v for k, v in out.items() if v is not None}


def apply_flat_overrides(distill_losses: dict, kd: Optional[dict],
                         name: str = 'kd') -> dict:
    """``distill_losses`` with the flat shorthand ``kd`` applied (a copy).

    Args:
        distill_losses (dict): Term name -> loss config.
        kd (dict, optional): Flat overrides, keys of ``FLAT_KEYS``: ``feat``, ``task``,
            ``mssim`` (or ``mssim_weight``) are loss weights; ``temperature`` is the task
            term's; ``top_ratio``, ``w_high``, ``w_low``, ``mask_mode`` the ``mssim``
            term's. A ``feat`` weight without a ``feat`` term adds ``FeatureMSELoss``.
        name (str): The argument's name in error messages. Defaults to ``'kd'``.

    Returns:
        dict: The merged config.

    Examples:
        >>> from maskaq_plugin.losses.defaults import DISTILL_LOSSES
        >>> cfg = apply_flat_overrides(DISTILL_LOSSES['cls'], dict(mssim=0.0, temperature=2))
        >>> cfg['mssim']['loss_weight'], cfg['task']
        (0.0, {'type': 'KDLoss', 'temperature': 2, 'loss_weight': 1.0})
    """
    unknown = sorted(set(kd or {}) - set(FLAT_KEYS))
    if unknown:
        raise ValueError(f'unknown {name} keys {unknown}; known: {list(FLAT_KEYS)}')
    overrides: Dict[str, dict] = {}
    for key, value in (kd or {}).items():
        term, option = FLAT_KEYS[key]
        if option == 'mask_mode' and value not in MASK_MODES:
            raise ValueError(f"{name}.mask_mode must be 'informative' (MaskAQ) or 'random' "
                             f"(the ablation), got {value!r}")
        overrides.setdefault(term, {})[option] = value
    if 'feat' in overrides and 'feat' not in distill_losses:
        overrides['feat'] = dict(type='FeatureMSELoss', **overrides['feat'])
    return _merge(distill_losses, overrides)


def distill_losses_for(task: str = 'cls', method: str = 'maskaq',
                       kd: Optional[dict] = None) -> dict:
    """The Stage 2 loss config of ``task`` and ``method``, with flat overrides ``kd``.

    Examples:
        >>> distill_losses_for('cls', 'mimiq')['mssim']['w_high']
        1.0
        >>> distill_losses_for('seg', 'psaq')['mssim']['loss_weight']
        0.0
    """
    if task not in DISTILL_LOSSES:
        raise ValueError(f'task must be one of {tuple(DISTILL_LOSSES)}, got {task!r}')
    if method not in METHOD_LOSSES:
        raise ValueError(f'method must be one of {tuple(METHOD_LOSSES)}, got {method!r}')
    return apply_flat_overrides(_merge(DISTILL_LOSSES[task], METHOD_LOSSES[method]), kd)


def flat_view(distill_losses: dict) -> dict:
    """The flat shorthand of a config: weights (0 for a missing term), the task
    temperature and the ``mssim`` options (those of ``FLAT_KEYS`` that it sets)."""
    out = {}
    for key, (term, option) in FLAT_KEYS.items():
        if key == 'mssim_weight':
            continue
        cfg = distill_losses.get(term) or {}
        if option == 'loss_weight':
            out[key] = float(cfg.get('loss_weight', 0.0)) if cfg else 0.0
        elif option in cfg:
            out[key] = cfg[option]
    return out


def mssim_from_records(records_fp: List[AttentionRecord], records_q: List[AttentionRecord],
                       **kwargs) -> Tensor:
    """``L_mssim`` averaged over layers, computed per group of equally shaped layers.

    Args:
        records_fp (list[AttentionRecord]): Teacher records of one forward (detached or not:
            the teacher side is detached inside the loss).
        records_q (list[AttentionRecord]): Student records of the same input, in the same
            forward order.
        **kwargs: ``top_ratio``, ``w_high``, ``w_low``, ``mask_mode``, ``generator`` of
            :func:`~maskaq_plugin.losses.functional.masked_attention_ssim`.

    Returns:
        Tensor: Scalar, the mean over layers of each layer's ``1 - mean(ssim)``.
    """
    if not records_fp or len(records_fp) != len(records_q):
        raise ValueError(f'got {len(records_fp)} teacher and {len(records_q)} student '
                         'attention records; record both models on the same input')
    index = {id(r): i for i, r in enumerate(records_fp)}
    total = 0
    for group in group_records(records_fp):
        ctx_q = [records_q[index[id(r)]].context for r in group]
        total = total + len(group) * masked_attention_ssim(
            [r.context for r in group], ctx_q, has_cls_token=group[0].has_cls_token, **kwargs)
    return total / len(records_fp)


class QATDistiller(nn.Module):
    """The Stage 2 loss: registered losses built from ``distill_losses``.

    Terms whose ``loss_weight`` is 0 are built (so validated) but not computed;
    ``distill_losses`` keeps the config (a copy).

    Args:
        distill_losses (dict): Term name (``feat``, ``task``, ``mssim``) -> config of a
            registered loss (``type``, ``loss_weight``, options).

    Examples:
        >>> from maskaq_plugin.losses.defaults import DISTILL_LOSSES
        >>> distiller = QATDistiller(dict(DISTILL_LOSSES['cls']))
        >>> list(distiller.losses), distiller.records_attention
        (['task', 'mssim'], True)
        >>> kd_only = QATDistiller(dict(task=dict(type='KDLoss', temperature=5.0)))
        >>> z = torch.tensor([[1.0, 2.0]])
        >>> kd_only(task=lambda loss: loss(z, z))
        {'task': tensor(0.)}
    """

    def __init__(self, distill_losses: dict):
        super().__init__()
        self.distill_losses = copy.deepcopy(dict(distill_losses))
        unknown = sorted(set(distill_losses) - set(TERMS))
        if unknown:
            raise ValueError(f'unknown distill_losses terms {unknown}; known: {list(TERMS)}')
        built = {name: MODELS.build(cfg) for name, cfg in distill_losses.items()
                 if cfg is not None}
        self.losses = nn.ModuleDict({name: built[name] for name in TERMS
                                     if name in built and built[name].loss_weight != 0})
        if not self.losses:
            raise ValueError(f'every loss weight of distill_losses is 0 ({distill_losses}); '
                             'nothing to train')

    @property
    def records_attention(self) -> bool:
        """Whether the ``mssim`` term runs (so both backbones must be recorded)."""
        return 'mssim' in self.losses

    def forward(self, *, feats: Optional[Tuple] = None,
                task: Optional[Callable[[nn.Module], Tensor]] = None,
                records: Optional[Tuple[list, list]] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """The weighted terms, in the order ``feat``, ``task``, ``mssim``.

        Args:
            feats (tuple, optional): ``(teacher, student)`` backbone outputs (``feat``).
            task (Callable, optional): ``task(loss)`` -> the weighted task term, given the
                built ``task`` loss.
            records (tuple, optional): ``(teacher, student)`` attention records
                (``mssim``).
            generator (torch.Generator, optional): Source of the random mask of
                ``mask_mode='random'``. Defaults to None (global RNG).

        Returns:
            dict[str, Tensor]: Term name -> weighted scalar.
        """
        out = {}
        if 'feat' in self.losses:
            out['feat'] = self.losses['feat'](*feats)
        if 'task' in self.losses:
            out['task'] = task(self.losses['task'])
        if 'mssim' in self.losses:
            loss = self.losses['mssim']
            out['mssim'] = loss.loss_weight * mssim_from_records(
                *records, top_ratio=loss.top_ratio, w_high=loss.w_high, w_low=loss.w_low,
                mask_mode=loss.mask_mode, generator=generator)
        return out
