"""Export a MaskAQ checkpoint: quantized student checkpoint, ONNX and OpenVINO IR.

Writes what ``MaskAQExportHook`` writes after training (see
``maskaq_plugin/models/export.py``): ``quantized_student.pth``,
``backbone.onnx``, ``backbone.xml``/``.bin`` and, where the host model traces,
``model.onnx`` / ``model.xml``. The OpenVINO IR is checked against the torch student; it
stores a W4 student's weights as 4-bit ``i4`` codes (``i8`` at W8).
Examples::

    python tools/export.py CONFIG work_dirs/run1/epoch_6.pth --out work_dirs/run1/export
    python tools/export.py CONFIG CKPT --out OUT --formats onnx --no-full-model

Export always runs on the CPU (no ``--device``): the checkpoint is loaded with
``map_location='cpu'`` (one trained on a GPU exports the same), ONNX tracing does not
depend on the device, and the OpenVINO IR is compiled for and checked on the CPU, against
the torch student on the CPU.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.logging import print_log
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
import maskaq_plugin  # noqa: E402,F401  (registers components and safe checkpoint globals)
from maskaq_plugin.models.export import FORMATS, export_quantized  # noqa: E402
from maskaq_plugin.utils import load_config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a MaskAQ checkpoint')
    parser.add_argument('config', help='the MaskAQ config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='checkpoint saved by tools/train.py')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--formats', nargs='+', default=list(FORMATS), choices=FORMATS,
                        help='export formats (default: both)')
    parser.add_argument('--no-full-model', action='store_true',
                        help='export the quantized backbone only')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint {args.checkpoint!r} does not exist; pass a checkpoint '
                     'saved by tools/train.py (e.g. WORK_DIR/epoch_N.pth)')
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if cfg.model.get('type') != 'MaskAQAlgorithm':
        raise SystemExit(f'{args.config}: model.type is {cfg.model.get("type")!r}; '
                         'tools/export.py exports MaskAQ configs (configs/*/maskaq_*.py)')
    # The checkpoint holds teacher and student: no need to load (or download) the teacher.
    cfg.model.teacher_checkpoint = None
    cfg.model.allow_random_teacher = True
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    written, _ = export_quantized(model.eval(), args.out, args.formats,
                               full_model=not args.no_full_model, strict=True)
    for name, path in written.items():
        print_log(f'{name}: {path}', logger='current')
    return written


if __name__ == '__main__':
    main()
