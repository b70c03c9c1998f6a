"""Reproduce the paper's Table 1: data-free quantized ViTs on your ImageNet val folder.

For each model (weights from local files), evaluates the FP model, then quantizes it
with maskaq_plugin.quantize_data_free for every bit-width, method and seed and evaluates
the student; prints our top-1 beside the paper's (Table 1, ICML 2026: MaskAQ and MimiQ
rows) and writes WORK_DIR/table1.md and table1.json. Finished cells are stored under
WORK_DIR/cells and reused by a later call with the same arguments (an interrupted run
loses only the cell in progress; a change to the code of maskaq_plugin/ or benchmarks/
runs them again).

Default budget, the paper's (docs/method.md): 2000 synthesis iterations per batch, 100
QAT epochs, synthetic set refreshed every 30 epochs (maskaq only), batch 16 (synthesis
and QAT), 10 000 synthetic images per round (the authors' main.py default): a MaskAQ
cell runs 5 synthesis rounds of 625 batches x 2000 steps. Override it for a quick look
(--synthesis-iters, --epochs, --num-samples, --batch-size, --max-val-images).

Examples:
    python tools/table1.py --val-dir /data/imagenet/val \\
        --weights deit_tiny_patch16_224=ckpt/deit_tiny.pth \\
                  swin_tiny_patch4_window7_224=ckpt/swin_tiny.safetensors
    python tools/table1.py --val-dir /data/imagenet/val --weights-dir ckpt/ \\
        --models deit_small_patch16_224 --bits W4A4 W4A8 --methods maskaq mimiq --seeds 0 1 2
    # quick look: 64 images, 100 iterations, 5 epochs, 5000 val images
    python tools/table1.py --val-dir /data/imagenet/val --weights-dir ckpt/ \\
        --num-samples 64 --synthesis-iters 100 --epochs 5 --max-val-images 5000
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the benchmarks package lives beside tools/

from benchmarks.table1 import METHODS, PAPER_BUDGET, run_table1  # noqa: E402
from benchmarks.table1_data import check_model_name  # noqa: E402
from benchmarks.table1_paper import BITS, MODELS  # noqa: E402
from maskaq_plugin.utils.device import add_device_argument, device_or_exit  # noqa: E402

WEIGHT_SUFFIXES = ('.safetensors', '.pth', '.pth.tar', '.bin')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--val-dir', required=True,
                        help='ImageNet validation folder: <wnid>/*.JPEG (sorted wnids = '
                        'class indices), or flat images with --val-labels')
    parser.add_argument('--val-labels', help='flat layout: a file of "relative/path label" '
                        'lines (e.g. mmpretrain meta/val.txt)')
    parser.add_argument('--weights', nargs='+', default=[], metavar='MODEL=PATH',
                        help='local weights per model: a timm checkpoint (.pth/.safetensors) '
                        'or an mmpretrain checkpoint (DeiT, Swin-T)')
    parser.add_argument('--weights-dir', help='folder holding <model>.safetensors / .pth '
                        '(timm names) for models without --weights')
    parser.add_argument('--models', nargs='+',
                        help=f'timm names (default: those with weights); Table 1: '
                        f'{", ".join(MODELS.values())}')
    parser.add_argument('--bits', nargs='+', default=['W4A4', 'W4A8'], choices=BITS)
    parser.add_argument('--methods', nargs='+', default=['maskaq'], choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    add_device_argument(parser)
    budget = parser.add_argument_group('budget (defaults: the paper\'s)')
    for key, value in PAPER_BUDGET.items():
        budget.add_argument('--' + key.replace('_', '-'), type=int, default=value,
                            help=f'default: {value}')
    parser.add_argument('--max-val-images', type=int,
                        help='evaluate on an evenly spaced subset (default: all)')
    parser.add_argument('--recipe', default='lsq', choices=('lsq', 'nncf'),
                        help='fake quantizers (default: lsq, the authors\')')
    parser.add_argument('--eval-batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, default=4, help='data loader workers')
    parser.add_argument('--work-dir', default='work_dirs/table1')
    parser.add_argument('--save', action='store_true',
                        help='save each student (maskaq_plugin.quant.save_quantized) to '
                        'WORK_DIR/students/')
    parser.add_argument('--no-cache', action='store_true',
                        help='neither reuse nor store finished cells')
    return parser.parse_args(argv)


def resolve_weights(args):
    weights = {}
    for item in args.weights:
        name, sep, path = item.partition('=')
        if not sep or not path:
            raise SystemExit(f'--weights {item!r}: expected MODEL=PATH, e.g. '
                             'deit_tiny_patch16_224=ckpt/deit_tiny.pth')
        weights[check_model_name(name)] = path
    models = args.models or list(weights)
    if args.weights_dir:
        if not osp.isdir(args.weights_dir):
            raise SystemExit(f'--weights-dir {args.weights_dir!r} is not a folder')
        for name in args.models or MODELS.values():
            found = [osp.join(args.weights_dir, name + s) for s in WEIGHT_SUFFIXES
                     if osp.isfile(osp.join(args.weights_dir, name + s))]
            if name not in weights and found:
                weights[name] = found[0]
        models = args.models or [m for m in MODELS.values() if m in weights]
    if not models:
        raise SystemExit('no model to run: pass --weights MODEL=PATH or --weights-dir DIR')
    for name in models:
        check_model_name(name)
        if name not in weights:
            raise SystemExit(f'no weights for {name}: pass --weights {name}=PATH or put '
                             f'{name}.pth / .safetensors in --weights-dir')
    return models, weights


def main(argv=None):
    args = parse_args(argv)
    device = str(device_or_exit(args.device))
    models, weights = resolve_weights(args)
    out = run_table1(models, weights, args.val_dir, bits=args.bits, methods=args.methods,
                     seeds=args.seeds, device=device,
                     budget={k: getattr(args, k) for k in PAPER_BUDGET},
                     work_dir=args.work_dir, val_labels=args.val_labels,
                     max_val_images=args.max_val_images,
                     eval_batch_size=args.eval_batch_size, workers=args.workers,
                     recipe=args.recipe, save=args.save, cache=not args.no_cache)
    print(out['markdown'])
    print(f'written: {osp.join(args.work_dir, "table1.md")}, '
          f'{osp.join(args.work_dir, "table1.json")}')
    return out


if __name__ == '__main__':
    main()
