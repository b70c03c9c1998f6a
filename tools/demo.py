"""The embedded demo (``make demo``): MaskAQ backbone quantization of tiny Swin models.

Nothing is downloaded. The steps:

1. Generate the digit scenes (real handwritten digits from Debian's ``opencv-doc``
   ``digits.png`` on textured canvases) in COCO and ADE20K formats under ``data/``.
2. For each shipped full-precision checkpoint (``checkpoints/*.pth``, trained by
   ``tools/train_fp_models.py``; FP metrics in ``checkpoints/fp_metrics.json``), run the
   standard ``tools/train.py`` with the MaskAQ config at W4A8 and W4A4, on a demo budget
   (fewer epochs, samples and synthesis iterations than the configs' own schedule).
3. Write PNG previews of synthetic samples with their informative-region masks
   (``tools/synthesize.py``), and print one table: FP vs quantized box AP, mask AP and
   mIoU, with the wall time of each run. The table is also saved as
   ``work_dirs/demo/summary.md``.

Usage::

    python tools/demo.py [--work-dir work_dirs/demo] [--epochs 2] [--synthesis-iters 20]
                         [--device cpu|cuda]   # passed on to every run (default: cuda if any)
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

from maskaq_plugin.utils import add_device_argument, device_or_exit, last_logged_metrics

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RUNS = [  # (name, config, FP checkpoint, metric keys)
    ('Mask R-CNN Swin (det)', 'configs/mmdet/maskaq_maskrcnn_swin-tiny_digits_{bits}.py',
     'maskrcnn_swin-tiny_digits', ('coco/bbox_mAP', 'coco/segm_mAP')),
    ('UperNet Swin (seg)', 'configs/mmseg/maskaq_upernet_swin-tiny_digits_{bits}.py',
     'upernet_swin-tiny_digits', ('mIoU', )),
]


def parse_args():
    parser = argparse.ArgumentParser(description='MaskAQ demo on the digit scenes')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/digit_scenes')
    parser.add_argument('--bits', nargs='+', default=['w4a8', 'w4a4'])
    parser.add_argument('--epochs', type=int, default=2, help='QAT epochs per run')
    parser.add_argument('--num-samples', type=int, default=16, help='synthetic images')
    parser.add_argument('--synthesis-iters', type=int, default=20,
                        help='Stage 1 iterations per round (paper: 2000)')
    parser.add_argument('--batch-size', type=int, default=8)
    add_device_argument(parser)
    args = parser.parse_args()
    args.device = str(device_or_exit(args.device))  # refused here, before any run
    return args


def run(cmd, log_path):
    """Run ``cmd``, streaming its output to the terminal and to ``log_path``."""
    print('$', ' '.join(cmd), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            sys.stdout.write(line)
        if proc.wait() != 0:
            raise SystemExit(f'command failed (exit {proc.returncode}); log: {log_path}')


def data_options(data_root, task):
    root = osp.join(ROOT, data_root).rstrip('/') + '/'
    opts = [f'val_dataloader.dataset.data_root={root}', f'test_dataloader.dataset.data_root={root}']
    if task == 'det':
        ann = root + 'coco/annotations/instances_val.json'
        opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return opts


def main():
    args = parse_args()
    py = sys.executable
    work_root = osp.join(ROOT, args.work_dir)
    os.makedirs(work_root, exist_ok=True)
    t_start = time.time()

    # 1. data
    run([py, 'tools/make_digit_scenes.py', '--out', args.data_root],
        osp.join(work_root, 'data.log'))
    with open(osp.join(ROOT, 'checkpoints', 'fp_metrics.json')) as f:
        fp_metrics = json.load(f)['models']

    # 2. quantize each shipped model at each bit-width
    rows = []
    for name, config, ckpt, keys in RUNS:
        if not osp.isfile(osp.join(ROOT, 'checkpoints', ckpt + '.pth')):
            print(f'[demo] skipping {name}: checkpoints/{ckpt}.pth is not shipped')
            continue
        task = 'det' if 'mmdet' in config else 'seg'
        fp = fp_metrics.get(ckpt, {}).get('metrics', {})
        rows.append((name, 'FP32', {k: fp.get(k) for k in keys}, None))
        for bits in args.bits:
            work_dir = osp.join(work_root, f'{task}_{bits}')
            e = args.epochs
            opts = [
                f'train_cfg.max_epochs={e}', f'train_cfg.val_interval={e}',
                f'param_scheduler.0.T_max={e}', f'param_scheduler.0.end={e}',
                f'train_dataloader.batch_size={args.batch_size}',
                f'train_dataloader.dataset.num_samples={args.num_samples}',
                f'custom_hooks.0.interval={max(1, e // 2)}',
                f'custom_hooks.0.batch_size={args.batch_size}',
                f'custom_hooks.0.synthesis.iters={args.synthesis_iters}',
                f'custom_hooks.0.bootstrap_iters={args.synthesis_iters}',
                'default_hooks.logger.interval=2',
            ] + data_options(args.data_root, task)
            t0 = time.time()
            run([py, 'tools/train.py', config.format(bits=bits), '--work-dir', work_dir,
                 '--device', args.device, '--cfg-options'] + opts,
                osp.join(work_root, f'{task}_{bits}.log'))
            rows.append((name, bits.upper(), last_logged_metrics(work_dir, keys), time.time() - t0))

    # 3. previews of synthetic samples with their informative-region masks
    preview_dir = osp.join(work_root, 'previews')
    run([py, 'tools/synthesize.py', RUNS[0][1].format(bits=args.bits[0]), '--out', preview_dir,
         '--num-samples', '4', '--preview', '4', '--device', args.device, '--cfg-options',
         f'custom_hooks.0.synthesis.iters={args.synthesis_iters}',
         f'custom_hooks.0.bootstrap_iters={args.synthesis_iters}', 'custom_hooks.0.batch_size=4'],
        osp.join(work_root, 'synthesize.log'))

    def fmt(v):
        return '-' if v is None else f'{v:.3f}' if isinstance(v, float) else str(v)

    lines = ['| model | precision | box AP | mask AP | mIoU | wall time |',
             '| --- | --- | --- | --- | --- | --- |']
    for name, prec, m, secs in rows:
        miou = m.get('mIoU')
        miou = miou / 100 if isinstance(miou, float) and miou > 1 else miou  # mmseg: percent
        lines.append(f'| {name} | {prec} | {fmt(m.get("coco/bbox_mAP"))} | '
                     f'{fmt(m.get("coco/segm_mAP"))} | {fmt(miou)} | '
                     f'{"-" if secs is None else f"{secs:.0f} s"} |')
    pngs = sorted(glob.glob(osp.join(preview_dir, '**', '*.png'), recursive=True))
    shown = osp.commonpath(pngs) if len(pngs) > 1 else (pngs[0] if pngs else preview_dir)
    lines += ['', f'Previews ({len(pngs)} PNG, {args.synthesis_iters} synthesis iterations): '
              f'{shown}', 'What 2000 iterations (the paper\'s) give on these models: '
              'docs/user_guide.md, section "What MaskAQ synthesizes"',
              f'Total wall time: {time.time() - t_start:.0f} s']
    summary = '\n'.join(lines)
    with open(osp.join(work_root, 'summary.md'), 'w') as f:
        f.write(summary + '\n')
    print('\n' + summary)
    return rows


if __name__ == '__main__':
    main()
