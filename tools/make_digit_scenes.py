"""Generate *digit scenes*: real handwritten digits on textured canvases.

The command line of :mod:`maskaq_plugin.datasets.digit_scenes`, which describes the
scenes and the COCO / ADE20K layouts it writes under ``--out``. Nothing is rewritten when
``<out>/meta.json`` already describes the requested scenes (``--force`` rewrites them).

Examples:
    python tools/make_digit_scenes.py --out data/digit_scenes            # 400 train / 100 val
    python tools/make_digit_scenes.py --out /tmp/ds --num-train 6 --num-val 4
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout
from maskaq_plugin.datasets.digit_scenes import generate, up_to_date  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/digit_scenes', help='output directory')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, default=128, help='canvas side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--digits', default=None, help='path of digits.png(.gz)')
    parser.add_argument('--force', action='store_true',
                        help='rewrite the scenes even when <out>/meta.json says they exist')
    return parser.parse_args()


def main():
    args = parse_args()
    if not args.force and up_to_date(args.out, args.num_train, args.num_val, args.size,
                                     args.seed):
        print(f'{args.out}: up to date ({args.num_train} train / {args.num_val} val scenes, '
              f'seed {args.seed}); --force rewrites them')
        return
    try:
        meta = generate(args.out, args.num_train, args.num_val, args.size, args.seed,
                        args.digits)
    except FileNotFoundError as e:
        raise SystemExit(str(e))
    print(f'wrote {meta["num_train"]} train / {meta["num_val"]} val scenes to {args.out}')


if __name__ == '__main__':
    main()
