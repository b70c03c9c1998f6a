"""Build and inspect the host model (mmdet detector, mmseg segmentor, mmpretrain classifier).

Helpers of :class:`~maskaq_plugin.models.MaskAQAlgorithm`: resolve the registry scope of
an architecture config, load the full-precision checkpoint strictly, tell the task, and
read the data preprocessor's normalisation.
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.registry import MODELS, DefaultScope
from torch import nn

HOST_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
_MAX_LISTED = 8


def resolve_scope(cfg: dict) -> Optional[str]:
    """Registry scope that builds ``cfg``: its ``_scope_``, the current default scope
    when that knows the type, else the first host library that registers the type."""
    if cfg.get('_scope_'):
        return cfg['_scope_']
    current = DefaultScope.get_current_instance()
    candidates = ([current.scope_name] if current is not None else []) + list(HOST_SCOPES)
    for scope in candidates:
        try:
            if MODELS.get(f'{scope}.{cfg["type"]}') is not None:
                return scope
        except Exception:  # library not installed
            continue
    raise KeyError(f'model type {cfg["type"]!r} is not registered in any of '
                   f'{candidates}; add `_scope_` to the architecture config or import the '
                   'library that defines it (custom_imports)')


def build_in_scope(cfg: dict, scope: Optional[str]) -> nn.Module:
    """``MODELS.build(cfg)`` with ``scope`` as default scope (nested configs too)."""
    cfg = ConfigDict(copy.deepcopy(dict(cfg)))
    cfg.pop('_scope_', None)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg)


def task_of(model: nn.Module) -> str:
    """``'det'``, ``'seg'`` or ``'cls'`` from the class of the host model."""
    checks = (('det', 'mmdet.models.detectors', 'BaseDetector'),
              ('seg', 'mmseg.models.segmentors', 'BaseSegmentor'),
              ('cls', 'mmpretrain.models.classifiers', 'BaseClassifier'))
    for task, module, name in checks:
        try:
            base = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:
            continue
        if isinstance(model, base):
            return task
    raise TypeError(f'{type(model).__name__} is not an mmdet detector, mmseg segmentor or '
                    'mmpretrain classifier; MaskAQAlgorithm supports those three')


def preprocessor_norm(preprocessor: nn.Module) -> Dict[str, object]:
    """``mean``, ``std`` (0-255 scale, model channel order) and ``bgr_to_rgb`` of an
    mmengine / mmdet / mmseg / mmpretrain image data preprocessor (plain types)."""
    swap = bool(getattr(preprocessor, '_channel_conversion', False)
                or getattr(preprocessor, 'channel_conversion', False)
                or getattr(preprocessor, 'to_rgb', False))
    if getattr(preprocessor, '_enable_normalize', False):
        mean = preprocessor.mean.flatten().tolist()
        std = preprocessor.std.flatten().tolist()
    else:
        mean, std = None, None
    if mean is None:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return dict(mean=[float(v) for v in mean], std=[float(v) for v in std], bgr_to_rgb=swap)


def _listed(keys: List[str]) -> str:
    shown = ', '.join(keys[:_MAX_LISTED])
    return shown + (f' ... ({len(keys)} in all)' if len(keys) > _MAX_LISTED else '')


def load_state_dict_strict(model: nn.Module, filename: str) -> None:
    """Load ``filename`` (path or URL, mmengine checkpoint or bare state dict) into
    ``model``; missing, unexpected and shape-mismatched keys raise, naming them.

    A missing local file raises ``FileNotFoundError`` and a truncated or corrupt one
    :class:`~maskaq_plugin.utils.CheckpointFileError`, both naming the path and the fix,
    before any tensor is read."""
    from mmengine.runner import CheckpointLoader

    from ..utils.checkpoint_file import check_checkpoint_file, explain_load_error
    check_checkpoint_file(filename, 'teacher_checkpoint')  # missing / truncated: ours
    try:
        ckpt = CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    except Exception as err:
        damaged = explain_load_error(filename, err, 'teacher_checkpoint')
        if damaged is not None:
            raise damaged from err
        raise RuntimeError(f'cannot load teacher_checkpoint {filename!r}: '
                           f'{type(err).__name__}: {err}') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise RuntimeError(f'teacher_checkpoint {filename!r} holds no state dict')
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    if any(k.startswith('student.') for k in state) and any(
            k.startswith('teacher.') for k in state):
        raise RuntimeError(f'{filename!r} is a MaskAQ (quantized) checkpoint; '
                           'teacher_checkpoint must be the full-precision model. Load a '
                           'MaskAQ checkpoint with load_from / --resume instead.')
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model '
                        f'{tuple(own[k].shape)}' for k in set(own) & set(state)
                        if isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape)
    problems = [f'{name} keys: {_listed(keys)}' for name, keys in
                (('missing', missing), ('unexpected', unexpected),
                 ('shape-mismatched', mismatched)) if keys]
    if problems:
        raise RuntimeError(f'teacher_checkpoint {filename!r} does not match the architecture '
                           f'{type(model).__name__}: ' + '; '.join(problems) +
                           '. Use the checkpoint trained with this exact config.')
    model.load_state_dict(state, strict=True)


def split_neck(model: nn.Module) -> Tuple[nn.Module, Optional[nn.Module]]:
    """``(backbone, neck or None)`` of a host model."""
    neck = getattr(model, 'neck', None)
    return model.backbone, neck if isinstance(neck, nn.Module) else None
