"""Train (quantize) a model with MaskAQ: the usual OpenMMLab ``tools/train.py``.

Works on mmdet, mmseg and mmpretrain configs alike (the registry scope comes from the
config's ``default_scope``). Examples::

    python tools/train.py configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py
    python tools/train.py CONFIG --work-dir work_dirs/run1 --resume          # latest ckpt
    python tools/train.py CONFIG --resume work_dirs/run1/epoch_2.pth
    torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch    # CPU: gloo
    python tools/train.py CONFIG --device cpu        # stay on the CPU where CUDA exists

``--device`` defaults to ``cuda`` when CUDA is available, else ``cpu``; an unavailable
device is refused. ``--amp`` is refused for MaskAQ configs: a QAT step whose loss is
non-finite is skipped with a loss that reaches no parameter
(:class:`~maskaq_plugin.models.MaskAQAlgorithm`), and AMP's ``GradScaler.step`` then fails
("No inf checks were recorded for this optimizer"); fp16 autocast through the fake
quantizers is also unvalidated. Other configs (the FP models) may use it on CUDA.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
import maskaq_plugin  # noqa: E402,F401  (registers components and safe checkpoint globals)
from maskaq_plugin.utils import (add_device_argument, check_checkpoints,  # noqa: E402
                                 device_or_exit, load_config, setup_launcher,
                                 use_runner_device)

AMP_REFUSED = ('--amp is not supported for MaskAQ configs: a QAT step whose loss is '
               'non-finite is skipped with a loss that reaches no parameter, and AMP\'s '
               'GradScaler.step then fails ("No inf checks were recorded"); fp16 autocast '
               'through the fake quantizers is also unvalidated. Drop --amp (fp32 training)')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Quantize a model with MaskAQ (train)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and exports')
    parser.add_argument(
        '--amp', action='store_true',
        help='automatic mixed precision (CUDA; refused for MaskAQ configs, see above)')
    add_device_argument(parser)
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or, without a value, from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value (e.g. '
        'train_cfg.max_epochs=2 model.w_bits=8)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)

    device = device_or_exit(args.device)
    if args.amp:
        if cfg.model.get('type') == 'MaskAQAlgorithm':
            raise SystemExit(AMP_REFUSED)
        if device.type != 'cuda':
            raise SystemExit(f'--amp needs a CUDA device (MMEngine AmpOptimWrapper), got '
                             f'--device {device}; drop --amp to train in fp32 on CPU')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume {args.resume!r}: no such checkpoint; pass a '
                             f'checkpoint file, or --resume alone for the latest one in '
                             f'{cfg.work_dir}')
        cfg.resume = True
        cfg.load_from = args.resume

    check_checkpoints(cfg)  # a missing or truncated file fails here, not after the build
    use_runner_device(cfg, device)
    setup_launcher(cfg, device)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
