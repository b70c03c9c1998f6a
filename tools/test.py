"""Evaluate a MaskAQ checkpoint: the usual OpenMMLab ``tools/test.py``.

The metrics are those of the config's ``test_evaluator`` (COCO bbox/segm AP for mmdet,
mIoU for mmseg, accuracy for mmpretrain), computed with the quantized student. Examples::

    python tools/test.py CONFIG work_dirs/run1/epoch_2.pth
    python tools/test.py CONFIG CKPT --out results.pkl --show-dir vis
    torchrun --nproc_per_node=2 tools/test.py CONFIG CKPT --launcher pytorch
    python tools/test.py CONFIG CKPT --device cpu    # default: cuda when available
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
import maskaq_plugin  # noqa: E402,F401  (registers components and safe checkpoint globals)
from maskaq_plugin.utils import (add_device_argument, device_or_exit,  # noqa: E402
                                 load_config, setup_launcher, use_runner_device)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a MaskAQ model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (a Runner checkpoint)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--show-dir', help='save painted predictions in this directory')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, show_dir):
    """Switch the config's visualization hook on, writing images to ``show_dir``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise SystemExit('--show-dir needs default_hooks.visualization in the config, e.g. '
                         "default_hooks = dict(visualization=dict(type='DetVisualizationHook'))")
    if cfg.default_scope == 'mmpretrain':  # mmpretrain.VisualizationHook
        hook.update(enable=True, out_dir=show_dir)
    elif cfg.default_scope == 'mmdet':  # DetVisualizationHook: relative to the log dir
        hook.update(draw=True, test_out_dir=osp.abspath(show_dir))
    else:  # mmseg SegVisualizationHook draws through the visualizer's save_dir
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir


def dump_metric(scope, out):
    """The metric that dumps predictions: mmdet's (encodes masks) or MMEngine's."""
    if not out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out {out!r}: the predictions are dumped with pickle; use a '
                         'file name ending in .pkl')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    return DumpResults(out_file_path=out)


def main(argv=None):
    args = parse_args(argv)
    device = device_or_exit(args.device)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint!r} does not exist; pass a checkpoint '
                         'saved by tools/train.py (e.g. WORK_DIR/epoch_N.pth)')
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)

    use_runner_device(cfg, device)
    setup_launcher(cfg, device)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(dump_metric(cfg.get('default_scope'), args.out))
    return runner.test()


if __name__ == '__main__':
    main()
