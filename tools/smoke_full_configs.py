"""Smoke-run every full-size MaskAQ config through ``tools/train.py`` on a tiny budget.

Nothing is downloaded: the zoo teachers of the configs are replaced by randomly
initialised ones, and the COCO / ADE20K / ImageNet validation sets by a few generated
images in the layout each config's val/test dataset reads. Per config:

1. Build ``model.architecture`` (random init, seeded) in the config's default scope and
   save it as an MMEngine-style checkpoint ``{'state_dict': ...}`` (``teacher.pth``).
2. Write ``--num-images`` images at the real input size in the dataset layout:
   COCO (``val2017/`` + ``annotations/instances_val2017.json``, boxes and polygons),
   ADE20K (``images/validation`` + ``annotations/validation`` PNGs), ImageNet
   (``val/`` + ``meta/val.txt``).
3. Run ``tools/train.py`` with ``--cfg-options``: bootstrap + one synthesis round of
   ``--synthesis-iters`` iterations, one QAT step (one epoch of one batch), validation on
   the generated images, and the export hook (ONNX / OpenVINO).
4. Read from its output the seconds per synthesis iteration and per QAT step and the
   child's peak RSS (``os.wait4``), and extrapolate the config's own budget (the paper's:
   T = 2000 iterations per batch of synthetic images, 100 epochs) on this CPU, assuming
   time linear in the number of images. The table goes to ``<work-dir>/summary.md`` and
   ``summary.json``, rewritten after each config; rows an earlier call wrote there for
   configs this call does not run are kept (run a few configs at a time, or rerun one).

Usage::

    python tools/smoke_full_configs.py [--configs segformer retinanet] [--work-dir
        work_dirs/smoke_full] [--synthesis-iters 2] [--batch-size 1] [--num-images 2]
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from maskaq_plugin.utils.device import add_device_argument, device_or_exit  # noqa: E402

CONFIGS = [  # cheapest first
    'configs/mmseg/maskaq_segformer_mit-b0_ade20k-512x512_w4a8.py',
    'configs/mmpretrain/maskaq_deit-small_in1k_w4a4.py',
    'configs/mmdet/maskaq_retinanet_pvtv2-b0_fpn_1x_coco_w4a8.py',
    'configs/mmpretrain/maskaq_swin-tiny_in1k_w4a4.py',
    'configs/mmseg/maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a8.py',
    'configs/mmseg/maskaq_swin-tiny-patch4-window7_upernet_ade20k-512x512_w4a4.py',
    'configs/mmdet/maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a8.py',
    'configs/mmdet/maskaq_mask-rcnn_swin-t-p4-w7_fpn_1x_coco_w4a4.py',
]
TASK_OF_SCOPE = dict(mmdet='det', mmseg='seg', mmpretrain='cls')
# Image size (W, H) written per task: the val pipelines' scales (COCO 1333x800, ADE20K
# 512 short side), ImageNet's 256 before the 224 centre crop.
IMAGE_SIZE = dict(det=(1333, 800), seg=(512, 512), cls=(256, 256))
METRIC = dict(det='coco/bbox_mAP', seg='mIoU', cls='accuracy/top1')  # logged by val


def _image(rng, size):
    """(H, W, 3) uint8: smooth colour blobs plus noise, not a constant image."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(xx * rng.uniform(3, 9) + rng.uniform(0, 6)) *
                    np.cos(yy * rng.uniform(3, 9)) for _ in range(3)], -1)
    img = (img + 1) * 110 + rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_coco(root, num_images, size=IMAGE_SIZE['det'], seed=0):
    """``root/val2017/*.jpg`` and ``root/annotations/instances_val2017.json`` (80 COCO
    categories, two boxes with rectangle polygons per image); returns the json path."""
    from mmdet.datasets import CocoDataset
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'val2017'), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    classes = CocoDataset.METAINFO['classes']
    coco = dict(images=[], annotations=[],
                categories=[dict(id=i + 1, name=c) for i, c in enumerate(classes)])
    w, h = size
    for i in range(num_images):
        name = f'{i + 1:012d}.jpg'
        Image.fromarray(_image(rng, size)).save(osp.join(root, 'val2017', name), quality=90)
        coco['images'].append(dict(id=i + 1, file_name=name, width=w, height=h))
        for _ in range(2):
            bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            coco['annotations'].append(dict(
                id=len(coco['annotations']) + 1, image_id=i + 1,
                category_id=int(rng.integers(1, len(classes) + 1)),
                bbox=[round(v, 2) for v in (x, y, bw, bh)],
                segmentation=[[round(v, 2) for v in poly]], area=round(bw * bh, 2),
                iscrowd=0))
    ann = osp.join(root, 'annotations', 'instances_val2017.json')
    with open(ann, 'w') as f:
        json.dump(coco, f)
    return ann


def write_ade20k(root, num_images, size=IMAGE_SIZE['seg'], seed=0):
    """``root/images/validation/*.jpg`` and ``root/annotations/validation/*.png`` (labels
    0..150, 0 = ignored, as ADE20K's ``reduce_zero_label``)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for sub in ('images/validation', 'annotations/validation'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    w, h = size
    for i in range(num_images):
        name = f'ADE_val_{i + 1:08d}'
        Image.fromarray(_image(rng, size)).save(
            osp.join(root, 'images/validation', name + '.jpg'), quality=90)
        labels = rng.integers(0, 151, (4, 4)).astype(np.uint8)  # a 4x4 grid of regions
        seg = np.kron(labels, np.ones((math.ceil(h / 4), math.ceil(w / 4)), np.uint8))
        Image.fromarray(seg[:h, :w]).save(osp.join(root, 'annotations/validation', name + '.png'))


def write_imagenet(root, num_images, size=IMAGE_SIZE['cls'], seed=0):
    """``root/val/*.JPEG`` and ``root/meta/val.txt`` (``name label`` lines), which
    mmpretrain's ``ImageNet(split='val')`` reads."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'val'), exist_ok=True)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    lines = []
    for i in range(num_images):
        name = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
        Image.fromarray(_image(rng, size)).save(osp.join(root, 'val', name), quality=90)
        lines.append(f'{name} {int(rng.integers(0, 1000))}')
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_teacher(cfg, path, seed=0):
    """Save ``cfg.model.architecture`` with random weights as ``{'state_dict': ...}``."""
    import torch

    from maskaq_plugin.models.architecture import build_in_scope
    torch.manual_seed(seed)
    model = build_in_scope(cfg.model.architecture, cfg.default_scope)
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(random_init_seed=seed)), path)
    return path


def smoke_options(task, data_root, teacher, batch, iters):
    """``--cfg-options`` of the smoke budget: one synthesis round, one QAT step."""
    opts = [
        f'model.teacher_checkpoint={teacher}',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'param_scheduler.0.T_max=1', 'param_scheduler.0.end=1',
        f'train_dataloader.batch_size={batch}', 'train_dataloader.num_workers=0',
        f'train_dataloader.dataset.num_samples={batch}',
        f'custom_hooks.0.batch_size={batch}', f'custom_hooks.0.synthesis.iters={iters}',
        f'custom_hooks.0.bootstrap_iters={iters}', 'default_hooks.logger.interval=1',
    ]
    for split in ('val', 'test'):
        opts += [f'{split}_dataloader.dataset.data_root={data_root}',
                 f'{split}_dataloader.batch_size=1', f'{split}_dataloader.num_workers=0',
                 f'{split}_dataloader.persistent_workers=False']
        if task == 'det':
            ann = osp.join(data_root, 'annotations', 'instances_val2017.json')
            opts.append(f'{split}_evaluator.ann_file={ann}')
    return opts


def run_stamped(cmd, log_path, timeout):
    """Run ``cmd``; return (rc, [(seconds since start, line)], peak RSS of the child in
    MiB, its CPU seconds). Each line is stamped when it arrives (the child runs
    unbuffered)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    t0 = time.monotonic()
    lines = []
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    with open(log_path, 'w', buffering=1) as log:  # line-buffered: follow it live
        for line in proc.stdout:
            t = time.monotonic() - t0
            lines.append((t, line))
            log.write(f'[{t:8.2f}] {line}')
            if t > timeout:
                proc.kill()
                log.write(f'[smoke] killed after {timeout} s\n')
                break
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, lines, usage.ru_maxrss / 1024, cpu  # Linux: ru_maxrss in KiB


def _stamp(lines, pattern):
    for t, line in lines:
        if re.search(pattern, line):
            return t
    return None


def measure(lines, iters, metric):
    """Seconds per synthesis iteration (student in the loop, one batch), per QAT step,
    and the last logged value of the validation ``metric``."""
    calib = _stamp(lines, r'calibrated the student quantizer ranges')
    synth = _stamp(lines, r'sample bank round 0, synthesis:')
    text = ''.join(line for _, line in lines)
    step = re.findall(r'Epoch\(train\)\s+\[1\]\[1/1\].*?\stime: ([\d.]+)', text)
    value = re.findall(r'Epoch\(val\).*?\[\d+/\d+\].*?\s%s: ([-\d.]+)' % re.escape(metric),
                       text)
    failed = re.findall(r'(\S+ export FAILED: \w+)(?:.*?(relative L2 error [\d.]+ > [\d.]+))?',
                        text)
    return dict(synthesis_s_per_iter=(synth - calib) / iters if calib and synth else None,
                qat_s_per_step=float(step[0]) if step else None,
                metric=f'{metric}: {value[-1]}' if value else None,
                export_failed=[' '.join(filter(None, f)) for f in failed])


def paper_budget(cfg):
    """The config's own schedule: iterations, epochs, refresh rounds, images, batch."""
    hook = {h['type']: h for h in cfg.custom_hooks}['SampleRefreshHook']
    epochs = cfg.train_cfg.max_epochs
    refreshes = len([e for e in range(epochs) if (e + 1) % hook['interval'] == 0
                     and e + 1 < epochs])
    return dict(iters=hook['synthesis']['iters'], epochs=epochs, rounds=1 + refreshes,
                num_samples=cfg.train_dataloader.dataset.num_samples,
                batch=cfg.train_dataloader.batch_size)


def extrapolate(row, budget, batch):
    """Hours of the config's budget on this CPU, linear in images from the smoke batch:
    synthesis (bootstrap of one batch + ``rounds`` rounds of ``num_samples`` images, T
    iterations each) and QAT (``epochs`` passes over ``num_samples`` images)."""
    if row['synthesis_s_per_iter'] is None or row['qat_s_per_step'] is None:
        return None, None
    per_image_iter = row['synthesis_s_per_iter'] / batch
    images = budget['rounds'] * budget['num_samples'] + budget['batch']
    synth = images * budget['iters'] * per_image_iter
    qat = budget['epochs'] * budget['num_samples'] * row['qat_s_per_step'] / batch
    return synth / 3600, qat / 3600


def smoke(config, args):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, config))
    task = TASK_OF_SCOPE[cfg.default_scope]
    name = osp.splitext(osp.basename(config))[0]
    work = osp.join(args.work_dir, name)
    shutil.rmtree(work, ignore_errors=True)  # a fresh run: no sample bank to reuse
    data_root = osp.join(args.work_dir, 'data', task) + '/'
    if not osp.isdir(data_root):
        dict(det=write_coco, seg=write_ade20k, cls=write_imagenet)[task](
            data_root, args.num_images)
    teacher = write_teacher(cfg, osp.join(work, 'teacher_random.pth'))
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', work,
           '--device', str(args.device),
           '--cfg-options', *smoke_options(task, data_root, teacher, args.batch_size,
                                           args.synthesis_iters)]
    print(f'[smoke] {name}\n$ {" ".join(cmd)}', flush=True)
    t0 = time.monotonic()
    log = osp.join(args.work_dir, name + '.log')
    rc, lines, rss, cpu = run_stamped(cmd, log, args.timeout)
    row = dict(config=config, task=task, device=str(args.device), rc=rc,
               wall_s=time.monotonic() - t0, cpu_s=cpu,
               peak_rss_mib=rss, **measure(lines, args.synthesis_iters, METRIC[task]))
    exports = [f for f in ('quantized_student.pth', 'backbone.onnx', 'backbone.xml')
               if osp.isfile(osp.join(work, f))]
    row['exports'] = exports
    row['passed'] = (rc == 0 and row['metric'] is not None and len(exports) == 3
                     and not row['export_failed'])
    row['cpu_extrapolation_h'] = dict(zip(('synthesis', 'qat'), extrapolate(
        row, paper_budget(cfg), args.batch_size)), budget=paper_budget(cfg))
    os.remove(teacher)  # up to 200 MB each; rewritten by the next smoke run
    print(f'[smoke] {name}: {"PASS" if row["passed"] else "FAIL"} in {row["wall_s"]:.0f} s',
          flush=True)
    return row


def table(rows, args):
    def f(v, fmt):
        return '-' if v is None else format(v, fmt)

    lines = [f'Smoke budget: {args.synthesis_iters} synthesis iterations (bootstrap and round '
             f'0), batch {args.batch_size}, 1 QAT step, validation on {args.num_images} '
             'generated images, export; random teachers.', '',
             '| config | result | wall (CPU) | peak RSS | synthesis s/iter | QAT s/step | '
             'val metric | export check | CPU extrapolation of the config budget: '
             'synthesis + QAT |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for r in rows:
        ext = r['cpu_extrapolation_h']
        est = '-' if ext['synthesis'] is None else (
            f'{ext["synthesis"]:.0f} h + {ext["qat"]:.1f} h')
        lines.append(
            f'| {osp.basename(r["config"])} | {"pass" if r["passed"] else "FAIL"} '
            f'(rc {r["rc"]}) | {r["wall_s"]:.0f} s ({r["cpu_s"]:.0f} s) | '
            f'{r["peak_rss_mib"]:.0f} MiB | '
            f'{f(r["synthesis_s_per_iter"], ".2f")} | {f(r["qat_s_per_step"], ".2f")} | '
            f'{r["metric"] or "-"} | {"; ".join(r["export_failed"]) or "ok"} | {est} |')
    b = rows[0]['cpu_extrapolation_h']['budget'] if rows else {}
    lines += ['', f'CPU extrapolation (not a measurement): per-image times of the smoke '
              f'batch scaled linearly to the configs\' budget ({b.get("iters")} iterations '
              f'x {b.get("rounds")} rounds x {b.get("num_samples")} images + one bootstrap '
              f'batch of {b.get("batch")}; {b.get("epochs")} QAT epochs over '
              f'{b.get("num_samples")} images); validation on the real val set excluded. '
              'The per-iteration times are wall-clock: on a shared CPU they include the '
              'time other processes held it (compare wall with CPU).']
    return '\n'.join(lines)


def previous_rows(path):
    """Rows of an earlier call in the same work dir (``summary.json``), so a call that
    runs some configs (or is interrupted) keeps the others' results; [] if none."""
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)


def merge_rows(rows, row):
    """``rows`` with ``row`` replacing the one of its config, in :data:`CONFIGS` order."""
    rows = [r for r in rows if r['config'] != row['config']] + [row]
    order = {c: i for i, c in enumerate(CONFIGS)}
    return sorted(rows, key=lambda r: order.get(r['config'], len(order)))


def parse_args():
    parser = argparse.ArgumentParser(description='Smoke-run the full-size MaskAQ configs')
    parser.add_argument('--configs', nargs='+', default=None,
                        help='substrings selecting configs (default: all 8)')
    parser.add_argument('--work-dir', default='work_dirs/smoke_full')
    parser.add_argument('--synthesis-iters', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--num-images', type=int, default=2)
    parser.add_argument('--timeout', type=float, default=3600, help='seconds per config')
    add_device_argument(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    args.device = device_or_exit(args.device)
    args.work_dir = osp.abspath(osp.join(ROOT, args.work_dir))
    configs = [c for c in CONFIGS if args.configs is None
               or any(s in c for s in args.configs)]
    if not configs:
        raise SystemExit(f'no config matches {args.configs}; configs: {CONFIGS}')
    rows = previous_rows(osp.join(args.work_dir, 'summary.json'))
    for config in configs:
        rows = merge_rows(rows, smoke(config, args))
        summary = table(rows, args)  # rewritten after each config
        with open(osp.join(args.work_dir, 'summary.md'), 'w') as f:
            f.write(summary + '\n')
        with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
            json.dump(rows, f, indent=1)
    print('\n' + summary)
    return rows


if __name__ == '__main__':
    main()
