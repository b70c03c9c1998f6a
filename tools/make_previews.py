"""The figure of docs/user_guide.md, "What MaskAQ synthesizes": synthetic digit images.

For each digit model (``cls``: the tiny ViT of ``benchmarks/cls_digits.py``; ``det``: the
tiny Swin Mask R-CNN; ``seg``: the tiny Swin UperNet, both at W4A8 through
``tools/synthesize.py``) this synthesizes ``--num`` images as MaskAQ does before QAT
(bootstrap synthesis without Q, calibration of Q's ranges, synthesis with Q in the
loop, both at ``--iters``) and writes one PNG: each image beside a copy with F's
informative region tinted red (``tools/synthesize.py``'s previews: the top 10 % of patch
keys of F's first attention layer), captioned with its target (class: the random label
and F's prediction; det: the prior's random boxes drawn in green; seg: the random label
layout as a third panel). A second block shows as many images of a baseline for
comparison: PSAQ-ViT's objective (cls) or the plain noise synthesis starts from (det,
seg). Examples::

    python tools/make_previews.py    # docs/previews_digits_<model>.png
    python tools/make_previews.py --models cls --iters 20 --out-dir /tmp/prev  # quick look
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path[:0] = [ROOT, osp.join(ROOT, 'tools')]  # run from a checkout
import synthesize  # noqa: E402  (tools/synthesize.py)
from maskaq_plugin.utils import add_device_argument, device_or_exit  # noqa: E402
from maskaq_plugin.utils.seeding import derive_seed  # noqa: E402

DENSE = {  # model -> (config, baseline)
    'det': 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_w4a8.py',
    'seg': 'configs/mmseg/maskaq_upernet_swin-tiny_digits_w4a8.py',
}
TITLES = {'cls': 'tiny ViT classifier (digits), W4A8',
          'det': 'tiny Swin Mask R-CNN (digit scenes), W4A8',
          'seg': 'tiny Swin UperNet (digit scenes), W4A8'}
PANEL = 128  # pixels per panel side (cls 32 px images are enlarged 4x, nearest)
GAP, CAPTION, HEADER, PER_LINE = 4, 14, 20, 4
PALETTE = np.array([[0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
                    [0, 114, 178], [213, 94, 0], [204, 121, 167], [255, 255, 255],
                    [128, 128, 128], [120, 60, 0], [60, 0, 120]], np.uint8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Preview figure of MaskAQ synthetic images')
    parser.add_argument('--models', nargs='+', default=['cls', 'det', 'seg'],
                        choices=['cls', 'det', 'seg'])
    parser.add_argument('--iters', type=int, default=2000,
                        help='synthesis iterations per round (paper: 2000)')
    parser.add_argument('--num', type=int, default=8, help='images per row block')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-dir', default=osp.join(ROOT, 'docs'),
                        help='writes previews_digits_<model>.png there')
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.num < 1:
        parser.error(f'--iters and --num must be >= 1, got {args.iters} and {args.num}')
    return args


def cls_rows(args, device):
    """MaskAQ and PSAQ-ViT images of the digits ViT, as ``quantize_data_free`` makes them."""
    from benchmarks.cls_digits import MEAN, STD, build_pair, load_or_train
    from maskaq_plugin.quant import calibrate_ranges_
    from maskaq_plugin.synthesis import ClassificationPrior, Synthesizer
    fp, _ = load_or_train(None)  # the shipped checkpoint
    teacher, q = build_pair(fp.to(device), 4, 8)
    common = dict(prior=ClassificationPrior(10), input_size=(3, 32, 32), mean=MEAN, std=STD,
                  iters=args.iters, progress=False)
    n, norm = args.num, dict(mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
                             bgr_to_rgb=False)
    boot = Synthesizer(teacher, **common).synthesize(n, n, seed=derive_seed(args.seed, 0))
    calibrate_ranges_(q, [boot.images.to(device)], subset_size=n)
    rows = []
    for label, res in (
            ('MaskAQ (with Q in the loop)', Synthesizer(teacher, student=q, **common)
             .synthesize(n, n, seed=derive_seed(args.seed, 1))),
            ("PSAQ-ViT's objective", Synthesizer(teacher, method='psaq', **common)
             .synthesize(n, n, seed=derive_seed(args.seed, 0)))):
        images = res.images.to(device)
        with torch.no_grad():
            prob = teacher(images).softmax(1).cpu()
        masks = synthesize.token_masks(teacher, images).cpu().numpy()
        panels = [dict(raw=raw, mask=mask, caption=f'label {y}, F: {p.argmax()} ({p.max():.2f})')
                  for raw, mask, y, p in zip(synthesize.to_bgr(res.images, norm), masks,
                                             res.targets, prob)]
        rows.append((label, panels))
    return rows


def dense_rows(model, args, device, work_dir):
    """MaskAQ round 0 of a digit-scene model (``tools/synthesize.py``) and plain noise."""
    iters = f'custom_hooks.0.synthesis.iters={args.iters}'
    sargs = synthesize.parse_args([
        DENSE[model], '--out', work_dir, '--num-samples', str(args.num), '--preview', '0',
        '--cfg-options', iters, f'custom_hooks.0.bootstrap_iters={args.iters}',
        f'custom_hooks.0.batch_size={args.num}', f'custom_hooks.0.seed={args.seed}'])
    algo, _, bank_dir, k = synthesize.synthesize_round(sargs, device)
    data = synthesize.SampleBank(bank_dir).load_round(k)
    noise = algo.build_synthesizer(with_student=False, method='noise', progress=False)
    sets = [('MaskAQ (round 0, with Q in the loop)', data['images'], data['targets']),
            ('plain noise (where synthesis starts)',
             noise.synthesize(args.num, args.num, seed=args.seed).images, None)]
    rows = []
    for label, images, targets in sets:
        masks = synthesize.token_masks(algo.teacher.backbone, images.to(device)).cpu().numpy()
        panels = []
        for i, (raw, mask) in enumerate(zip(synthesize.to_bgr(images, algo.norm), masks)):
            target = targets[i] if targets is not None else None
            panel = dict(raw=raw, mask=mask, caption='')
            if isinstance(target, dict):  # det: the prior's boxes
                panel['boxes'] = target['bboxes']
                panel['caption'] = 'boxes: ' + ' '.join(str(int(c)) for c in target['labels'])
            elif target is not None:  # seg: the random layout
                panel['layout'] = PALETTE[target.numpy().astype(np.int64) % len(PALETTE)]
                panel['caption'] = 'image | F\'s region | layout'
            panels.append(panel)
        rows.append((label, panels))
    return rows


def _text(canvas, text, xy, scale=0.4):
    cv2.putText(canvas, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def compose(title, rows):
    """One white canvas: a title, then per row block its label and its panels.

    Returns ``(canvas, placed)``: ``placed`` lists, per panel, the top-left ``(y, x)`` of
    the plain image (``raw``) and of its tinted copy (``tinted``), and its ``mask``
    (``PANEL x PANEL``, bool), for checks.
    """
    def big(a):
        return cv2.resize(a, (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)

    ncols = max(2 + ('layout' in p) for _, panels in rows for p in panels)
    tile_w, tile_h = ncols * PANEL + (ncols - 1) * 2, PANEL + CAPTION
    width = PER_LINE * tile_w + (PER_LINE + 1) * GAP
    lines = [(len(panels) + PER_LINE - 1) // PER_LINE for _, panels in rows]
    height = HEADER + sum(HEADER + n * (tile_h + GAP) for n in lines)
    canvas = np.full((height, width, 3), 255, np.uint8)
    _text(canvas, title, (GAP, 14), 0.45)
    placed, y = [], HEADER
    for (label, panels), n in zip(rows, lines):
        _text(canvas, label, (GAP, y + 14))
        y += HEADER
        for i, p in enumerate(panels):
            top, left = y + (i // PER_LINE) * (tile_h + GAP), GAP + (i % PER_LINE) * (tile_w + GAP)
            mask = big(p['mask'].astype(np.uint8)) > 0
            raw = big(p['raw'])
            scale = PANEL / p['raw'].shape[1]
            boxes = p.get('boxes')
            tinted = synthesize.tint(raw, mask, None if boxes is None else boxes * scale)
            tiles = [raw, tinted] + ([big(p['layout'][..., ::-1])] if 'layout' in p else [])
            for j, tile in enumerate(tiles):
                x = left + j * (PANEL + 2)
                canvas[top:top + PANEL, x:x + PANEL] = tile
            _text(canvas, p['caption'], (left, top + PANEL + 11), 0.35)
            placed.append(dict(raw=(top, left), tinted=(top, left + PANEL + 2), mask=mask))
        y += n * (tile_h + GAP)
    return canvas, placed


def save_png(canvas, path):
    """Save a BGR canvas as a 256-colour PNG (keeps a noisy figure small); no dithering, so
    equal pixels stay equal (the tint shows only where the mask is)."""
    from PIL import Image
    image = Image.fromarray(np.ascontiguousarray(canvas[..., ::-1]))
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                   dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv=None):
    args = parse_args(argv)
    device = device_or_exit(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    out = {}
    for model in args.models:
        start = time.time()
        torch.manual_seed(args.seed)
        if model == 'cls':
            rows = cls_rows(args, device)
        else:
            with tempfile.TemporaryDirectory() as work_dir:  # bank and logs
                rows = dense_rows(model, args, device, work_dir)
        secs = time.time() - start
        title = (f'{TITLES[model]}: {args.iters} synthesis iterations, seed {args.seed} '
                 f'({secs / 60:.1f} min on {device})')
        canvas, placed = compose(title, rows)
        path = osp.join(args.out_dir, f'previews_digits_{model}.png')
        save_png(canvas, path)
        print(f'{model}: {path} ({canvas.shape[1]}x{canvas.shape[0]} px, '
              f'{osp.getsize(path) / 1024:.0f} KB) in {secs:.0f} s', flush=True)
        out[model] = dict(path=path, seconds=secs, placed=placed, shape=canvas.shape)
    return out


if __name__ == '__main__':
    main()
