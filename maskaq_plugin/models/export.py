"""Deploy the result of a MaskAQ run: quantized checkpoint, ONNX and OpenVINO IR.

``MaskAQExportHook`` after training and ``tools/export.py`` call :func:`export_quantized`,
which writes, under ``out_dir``:

- ``quantized_student.pth``: the student only (no teacher, optimizer or log history):
  ``backbone`` = :func:`maskaq_plugin.quant.save_quantized` of the NNCF backbone (its
  NNCF config as a JSON string + state), ``state_dict`` = the neck and heads (full
  precision, except a classifier's quantized head: its layers' quantizer state rides
  here too), ``meta`` = bits, input size, task, the head's scheme (or None). Plain types only: loads with
  ``torch.load(weights_only=True)``; :func:`load_quantized_student` rebuilds the model.
- ``backbone.onnx`` and ``backbone.xml``/``.bin``: the quantized backbone (ONNX: QDQ
  pairs at 8 bits, OpenVINO ``FakeQuantize`` below; the IR stores the weights as ``i4``
  codes up to 4 bits, ``i8`` above, and is checked against the torch student, outputs
  and weight codes, by :func:`maskaq_plugin.quant.export_openvino`).
- ``model.onnx`` / ``model.xml``: the whole student (``mode='tensor'``: the raw head
  outputs, no post-processing) where the host model exports; each format is tried on
  its own and a failure is logged with its reason and skipped (the backbone files are
  what MaskAQ changes; deploy such heads with mmdeploy). Measured: RetinaNet and
  ViT classifiers export to both; UperNet with its usual pool scales (1, 2, 3, 6) to
  OpenVINO only (ONNX cannot express adaptive pooling to a size that does not divide
  the input); two-stage detectors (Mask R-CNN) to neither (their RoI stage needs image
  metas).
"""
import copy
import os
import os.path as osp
import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

FORMATS = ('onnx', 'openvino')
CHECKPOINT_NAME = 'quantized_student.pth'


class _TensorForward(nn.Module):
    """``host(x, mode='tensor')`` as a one-input module, for tracing."""

    def __init__(self, host: nn.Module):
        super().__init__()
        self.host = host

    def forward(self, x):
        return self.host(x, None, mode='tensor')


def _log(msg: str, level: int = 20) -> None:
    print_log(msg, logger='current', level=level)


def _export_openvino_logged(export_openvino, module, example, path, kwargs) -> None:
    """``export_openvino``, with its noise-floor acceptance sent to the MMEngine log.

    The check warns (``RuntimeWarning``, message starting ``OpenVINO IR``) when it accepts
    an IR whose error exceeds ``rtol`` but sits at the torch model's own float-rounding
    floor; in a training run that line belongs in the run's log file, not only on stderr.
    Every other warning is passed on unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        export_openvino(module, example, path, **kwargs)
    for w in caught:
        if issubclass(w.category, RuntimeWarning) and str(w.message).startswith('OpenVINO IR'):
            _log(f'export check: {w.message}', level=30)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def quantized_student_state(algo) -> dict:
    """The stripped checkpoint of ``algo`` (a MaskAQAlgorithm): plain types only."""
    from ..quant import save_quantized
    student = algo.student
    heads = {k: v.detach().cpu() for k, v in student.state_dict().items()
             if not k.startswith('backbone.')}
    return dict(
        backbone=save_quantized(algo.student_backbone_quantized),
        state_dict=heads,
        meta=dict(w_bits=algo.scheme.w_bits, a_bits=algo.scheme.a_bits,
                  input_size=list(algo.input_size), task=algo.task,
                  architecture=type(student).__name__,
                  backbone_type=type(student.backbone).__name__,
                  head_scheme=algo.head_scheme.to_dict() if algo.head_scheme else None))


def load_quantized_student(host: nn.Module, path: str) -> nn.Module:
    """Rebuild the quantized student from ``quantized_student.pth``.

    Args:
        host (nn.Module): The host model built from the architecture config (random or
            FP weights); its backbone is replaced by the quantized one, in place.
        path (str): A file written by :func:`export_quantized`.

    Returns:
        nn.Module: ``host``, with the quantized backbone and the saved neck / heads (the
        head's layers quantized again when the checkpoint's ``meta`` has a
        ``head_scheme``).
    """
    from ..attention import make_attention_explicit
    from ..quant import QuantScheme, load_quantized
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    example = torch.zeros(1, *ckpt['meta']['input_size'])
    make_attention_explicit(host.backbone)
    if ckpt['meta'].get('head_scheme'):  # a classifier whose head was quantized
        from .maskaq_algorithm import quantize_head_layers_
        host.eval()
        with torch.no_grad():
            feats = host.backbone(example)
            neck = getattr(host, 'neck', None)
            feats = neck(feats) if isinstance(neck, nn.Module) else feats
        quantize_head_layers_(host.head, QuantScheme.from_dict(ckpt['meta']['head_scheme']),
                              feats)
    host.backbone = load_quantized(host.backbone, ckpt['backbone'], example)
    missing, unexpected = host.load_state_dict(ckpt['state_dict'], strict=False)
    missing = [k for k in missing if not k.startswith('backbone.')]
    if missing or unexpected:
        raise RuntimeError(f'{path} does not match the model: missing {missing[:5]}, '
                           f'unexpected {unexpected[:5]}')
    return host


def export_quantized(algo, out_dir: str, formats: Sequence[str] = FORMATS,
                     full_model: bool = True, rtol: Optional[float] = None,
                     strict: bool = False) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Write the checkpoint and the exports of ``algo`` into ``out_dir``.

    Args:
        algo: A ``MaskAQAlgorithm`` (not wrapped).
        out_dir (str): Output directory (created).
        formats (Sequence[str]): Any of ``'onnx'``, ``'openvino'``. Defaults to both.
        full_model (bool): Also try the whole student. Defaults to True.
        rtol (float, optional): Tolerance of the OpenVINO check (relative L2 error).
            Defaults to None (``maskaq_plugin.quant``'s default).
        strict (bool): Raise when a backbone export fails (tools/export.py) instead of
            logging it (the hook: training results are kept). Defaults to False.

    Returns:
        tuple[dict, dict]: The written files (``{'checkpoint': path, 'backbone.onnx':
        path, ...}``) and the skipped ones with the reason (``{'model.onnx': '...'}``).
    """
    from ..quant import export_onnx, export_openvino
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f'unknown export formats {sorted(unknown)}; choose from {FORMATS}')
    os.makedirs(out_dir, exist_ok=True)
    written = {'checkpoint': osp.join(out_dir, CHECKPOINT_NAME)}
    skipped = {}
    torch.save(quantized_student_state(algo), written['checkpoint'])

    example = torch.randn(1, *algo.input_size, generator=torch.Generator().manual_seed(0))
    ov_kwargs = {} if rtol is None else dict(rtol=rtol)
    targets = [('backbone', algo.student_backbone_quantized, True)]
    if full_model:
        targets.append(('model', _TensorForward(algo.student), False))
    for name, module, required in targets:
        module = copy.deepcopy(module).cpu()
        module.eval()  # not chained: an NNCF-wrapped module's eval() returns None
        for fmt in formats:
            key = f'{name}.onnx' if fmt == 'onnx' else f'{name}.xml'
            path = osp.join(out_dir, key)
            try:
                if fmt == 'onnx':
                    export_onnx(module, example, path)
                else:
                    _export_openvino_logged(export_openvino, module, example, path,
                                            ov_kwargs)
            except Exception as e:  # noqa: BLE001  (reported, never silent)
                if required and strict:
                    raise
                skipped[key] = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:300]}'
                what = 'backbone export FAILED' if required else \
                    f'whole-model {fmt} export skipped ({type(algo.student).__name__})'
                _log(f'{what}: {skipped[key]}', level=40 if required else 30)
                continue
            written[key] = path
    return written, skipped
