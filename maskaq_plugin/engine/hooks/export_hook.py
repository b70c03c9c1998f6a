"""Export the quantized student after training (see :mod:`maskaq_plugin.models.export`)."""
from typing import Dict, Optional, Sequence

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.export import FORMATS, export_quantized


@HOOKS.register_module()
class MaskAQExportHook(Hook):
    """Export the quantized student after training (:func:`~maskaq_plugin.models.export.
    export_quantized`: checkpoint, ONNX, OpenVINO IR).

    Args:
        formats (Sequence[str]): ``'onnx'`` and/or ``'openvino'``. Defaults to both.
        full_model (bool): Also try exporting the whole student. Defaults to True.
        out_dir (str, optional): Defaults to None: the work dir.
        rtol (float, optional): Tolerance of the OpenVINO check. Defaults to None
            (``maskaq_plugin.quant``'s default, 5e-2).
    """

    priority = 'LOW'

    def __init__(self, formats: Sequence[str] = FORMATS, full_model: bool = True,
                 out_dir: Optional[str] = None, rtol: Optional[float] = None):
        formats = tuple(formats)
        if not formats or set(formats) - set(FORMATS):
            raise ValueError(f'formats must be a non-empty subset of {FORMATS}, got '
                             f'{formats!r}')
        self.formats, self.full_model = formats, full_model
        self.out_dir, self.rtol = out_dir, rtol
        self.exported: Dict[str, str] = {}
        self.skipped: Dict[str, str] = {}

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'student_backbone_quantized'):
            raise TypeError(f'MaskAQExportHook needs a MaskAQAlgorithm model, got '
                            f'{type(model).__name__}')
        if is_main_process():
            out_dir = self.out_dir or runner.work_dir
            self.exported, self.skipped = export_quantized(model, out_dir, self.formats,
                                                           self.full_model, self.rtol)
            lines = '\n'.join(f'  {k}: {v}' for k, v in self.exported.items())
            runner.logger.info(f'MaskAQ exports:\n{lines}')
        barrier()
