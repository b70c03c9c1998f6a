"""Data-free quantization of a tiny ViT on real handwritten digits: MaskAQ vs its baselines.

Steps:
    1. load OpenCV's ``digits.png`` (Debian ``opencv-doc``): 5000 real 20x20 digits, split
       by grid column as in tools/make_digit_scenes.py (columns 0-79 train, 80-99 test:
       4000 / 1000 images, 100 test digits per class);
    2. train a tiny timm ViT (32x32 input, patch 4, dim 64, depth 4, 4 heads, class
       token) once and cache it at ``checkpoints/vit_tiny_digits.pth`` with its FP test
       accuracy (weights-only checkpoint); later runs reuse it;
    3. for each bit-width, method of :func:`maskaq_plugin.quantize_data_free` and seed,
       quantize the FP model without data (same num_samples, synthesis_iters, epochs and
       batch size for every method) and measure test accuracy and wall time; two
       reference rows bracket them: the student calibrated on noise without QAT, and
       MaskAQ's calibration + QAT on as many *real* train digits (the upper bound);
    4. write the table (mean ± std over seeds when there are several) into the section
       "Classification (digits, tiny ViT)" of docs/benchmarks.md.

Examples:
    python tools/benchmark_cls.py                        # default budget, 1 seed
    python tools/benchmark_cls.py --seeds 0 1 2 --bits W4A4
    python tools/benchmark_cls.py --methods noise maskaq --num-samples 64 --no-write
"""
import argparse
import copy
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CKPT = osp.join(ROOT, 'checkpoints', 'vit_tiny_digits.pth')
DOC = osp.join(ROOT, 'docs', 'benchmarks.md')
SECTION = '## Classification (digits, tiny ViT)'
METHODS = ('noise', 'psaq', 'mimiq', 'maskaq')
VIT_CFG = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0,
               num_classes=10, drop_path_rate=0.1)
MEAN, STD = (0.1, ) * 3, (0.25, ) * 3  # close to the digits' pixel statistics


def load_digits(path=None):
    """``(x_train, y_train, x_test, y_test)``: uint8 ``(N, 20, 20)`` and int64 labels."""
    spec = importlib.util.spec_from_file_location(
        'make_digit_scenes', osp.join(ROOT, 'tools', 'make_digit_scenes.py'))
    scenes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scenes)
    cells = scenes.load_digit_cells(scenes.find_digits_png(path))  # (10, 500, 20, 20)
    cells = cells.reshape(10, 5, 100, 20, 20)  # (class, row, column, 20, 20)
    train, test = cells[:, :, :80].reshape(10, -1, 20, 20), cells[:, :, 80:].reshape(
        10, -1, 20, 20)
    labels = lambda a: np.repeat(np.arange(10), a.shape[1])  # noqa: E731
    return (torch.from_numpy(train.reshape(-1, 20, 20)), torch.from_numpy(labels(train)),
            torch.from_numpy(test.reshape(-1, 20, 20)), torch.from_numpy(labels(test)))


def to_input(cells):
    """uint8 (N, 20, 20) -> normalised (N, 3, 32, 32): pad to 24, resize to 32."""
    x = F.pad(cells.float().div(255).unsqueeze(1), (2, 2, 2, 2))
    x = F.interpolate(x, size=32, mode='bilinear', align_corners=False).clamp(0, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / torch.tensor(STD).view(1, 3, 1, 1)


def build_vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**VIT_CFG)


@torch.no_grad()
def accuracy(model, x, y, batch=250):
    model.eval()
    hits = sum((model(xb).argmax(1) == yb).sum().item()
               for xb, yb in zip(x.split(batch), y.split(batch)))
    return 100.0 * hits / len(y)


def random_affine(x, gen):
    """Training augmentation: rotation ±10°, scale 0.9-1.1, shift ±3 px (per image)."""
    b = len(x)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (3 / 16)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = (0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def train_fp(x_train, y_train, x_test, y_test, epochs=80, batch=128, seed=0):
    """Train the FP ViT (AdamW, cosine, label smoothing) and return it with its accuracy."""
    torch.manual_seed(seed)
    model = build_vit()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * math.ceil(len(y_train) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps,
                                                pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        start = time.time()
        for idx in torch.randperm(len(y_train), generator=gen).split(batch):
            loss = F.cross_entropy(model(random_affine(x_train[idx], gen)), y_train[idx],
                                   label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            print(f'  FP epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test acc '
                  f'{accuracy(model, x_test, y_test):.2f}% ({time.time() - start:.1f}s/epoch)')
    return model.eval(), accuracy(model, x_test, y_test)


def load_or_train(data, retrain=False):
    """The cached FP model and its test accuracy (trained and saved when missing)."""
    if osp.isfile(CKPT) and not retrain:
        ckpt = torch.load(CKPT, map_location='cpu', weights_only=True)
        if ckpt['meta']['vit_cfg'] == VIT_CFG:
            model = build_vit()
            model.load_state_dict(ckpt['state_dict'])
            return model.eval(), ckpt['meta']['test_acc']
        print(f'{CKPT} was trained with another architecture; retraining')
    print('training the FP model (once; cached at checkpoints/vit_tiny_digits.pth; '
          '~20-50 min on 2 busy cores)')
    model, _ = train_fp(*data)
    return save_fp(model, data[2], data[3])


def save_fp(model, x_test, y_test):
    """Save ``model`` in fp16 (weights-only checkpoint) and return it with its accuracy."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in
             model.state_dict().items()}  # fp16 storage keeps the file small
    model.load_state_dict(state)  # the shipped (fp16-rounded) weights, in fp32
    acc = accuracy(model, x_test, y_test)
    meta = dict(vit_cfg=VIT_CFG, mean=list(MEAN), std=list(STD), test_acc=acc,
                split='digits.png grid columns 0-79 train / 80-99 test',
                recipe='train_fp(): AdamW 2e-3, wd 0.05, one-cycle, 80 epochs, batch 128, '
                'label smoothing 0.1, random affine, seed 0')
    os.makedirs(osp.dirname(CKPT), exist_ok=True)
    torch.save(dict(state_dict=state, meta=meta), CKPT)
    return model.eval(), acc


def ptq_on_noise(fp, w_bits, a_bits, num_samples, seed, x_test, y_test):
    """Accuracy of the student calibrated on clamped N(0, 1) noise, without any QAT."""
    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.quant import QuantScheme, calibrate_ranges_, quantize_model
    teacher = copy.deepcopy(fp)
    make_attention_explicit(teacher)
    q = quantize_model(teacher, QuantScheme(w_bits, a_bits), torch.zeros(1, 3, 32, 32))
    lo = ((0 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    hi = ((1 - torch.tensor(MEAN)) / torch.tensor(STD)).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_samples, 3, 32, 32, generator=gen)
    calibrate_ranges_(q, torch.maximum(torch.minimum(noise, hi), lo))
    return accuracy(q, x_test, y_test)


def qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test, y_test):
    """Upper bound: MaskAQ's calibration and QAT (KD + 10·L_mssim) on real train digits."""
    from maskaq_plugin.api import DEFAULT_LR, QAT_LOSS
    from maskaq_plugin.attention import make_attention_explicit
    from maskaq_plugin.qat import run_classification_qat
    from maskaq_plugin.quant import QuantScheme, calibrate_ranges_, quantize_model
    teacher = copy.deepcopy(fp)
    make_attention_explicit(teacher)
    q = quantize_model(teacher, QuantScheme(w_bits, a_bits), torch.zeros(1, 3, 32, 32))
    teacher.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    real = x_train[torch.randperm(len(x_train), generator=gen)[:budget['num_samples']]]
    calibrate_ranges_(q, real)
    run_classification_qat(teacher, q, real, mean=MEAN, std=STD, epochs=budget['epochs'],
                           batch_size=budget['batch_size'], lr=DEFAULT_LR, seed=seed,
                           loss_kwargs=QAT_LOSS['maskaq'])
    return accuracy(q, x_test, y_test)


def fmt(values, digits=2):
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}'


def write_section(text):
    """Replace (or append) the classification section of docs/benchmarks.md."""
    doc = open(DOC).read() if osp.isfile(DOC) else '# Benchmarks\n'
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip('\n') + '\n\n' + text
    else:
        end = doc.find('\n## ', start + len(SECTION))
        doc = doc[:start] + text + (doc[end + 1:] if end >= 0 else '')
    with open(DOC, 'w') as f:
        f.write(doc.rstrip('\n') + '\n')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--digits', help='path of digits.png (default: opencv-doc)')
    parser.add_argument('--bits', nargs='+', default=['W4A8', 'W4A4'])
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--num-samples', type=int, default=64)
    parser.add_argument('--synthesis-iters', type=int, default=100)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--refresh-every', type=int, default=None,
                        help='MaskAQ refresh period (default: epochs // 2, one refresh; the '
                        'paper refreshes every 30 of 100 epochs)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: a shared 2-core box)')
    parser.add_argument('--retrain', action='store_true', help='retrain the FP model')
    parser.add_argument('--no-write', action='store_true', help='do not edit docs/')
    parser.add_argument('--json', help='also dump the raw results to this file')
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    from maskaq_plugin import quantize_data_free
    refresh = args.refresh_every or max(1, args.epochs // 2)
    # 1. data
    x_train, y_train, x_test, y_test = load_digits(args.digits)
    x_train, x_test = to_input(x_train), to_input(x_test)
    # 2. FP model
    fp, fp_acc = load_or_train((x_train, y_train, x_test, y_test), args.retrain)
    fp_acc = accuracy(fp, x_test, y_test)
    print(f'FP test accuracy {fp_acc:.2f}%')
    # 3. every bit-width x method x seed, same budget
    budget = dict(num_samples=args.num_samples, synthesis_iters=args.synthesis_iters,
                  batch_size=args.batch_size, epochs=args.epochs)
    results, ptq, real, start_all = {}, {}, {}, time.time()
    for bits in args.bits:
        w_bits, a_bits = int(bits[1:bits.index('A')]), int(bits[bits.index('A') + 1:])
        ptq[bits] = [ptq_on_noise(fp, w_bits, a_bits, args.num_samples, seed, x_test, y_test)
                     for seed in args.seeds]
        real[bits] = [qat_on_real(fp, w_bits, a_bits, x_train, budget, seed, x_test, y_test)
                      for seed in args.seeds]
        print(f'{bits} PTQ on noise (no QAT): {fmt(ptq[bits])}%, real-data QAT: '
              f'{fmt(real[bits])}%', flush=True)
        for method in args.methods:
            for seed in args.seeds:
                start = time.time()
                q = quantize_data_free(
                    fp, input_size=(3, 32, 32), num_classes=10, mean=MEAN, std=STD,
                    w_bits=w_bits, a_bits=a_bits, method=method, seed=seed,
                    refresh_every=refresh if method == 'maskaq' else None, progress=False,
                    **budget)
                seconds = time.time() - start
                acc = accuracy(q, x_test, y_test)
                results.setdefault((bits, method), []).append((acc, seconds))
                print(f'{bits} {method:6s} seed {seed}: {acc:.2f}% in {seconds:.0f}s',
                      flush=True)
    total = time.time() - start_all
    # 4. table
    cmd = 'python tools/benchmark_cls.py' + ''.join(
        f' --{k.replace("_", "-")} {v}' for k, v in budget.items()) + \
        f' --refresh-every {refresh} --threads {args.threads}' + \
        f' --seeds {" ".join(map(str, args.seeds))}'
    head = '| method | ' + ' | '.join(f'{b} acc (%) | {b} time (s)' for b in args.bits) + ' |'
    rows = [head, '|' + '---|' * (1 + 2 * len(args.bits)),
            '| FP (32-bit) | ' + ' | '.join(f'{fp_acc:.2f} | –' for _ in args.bits) + ' |']
    rows.append('| *reference: noise calibration only, no QAT* | ' + ' | '.join(
        f'{fmt(ptq[b])} | –' for b in args.bits) + ' |')
    rows.append(f'| *reference: real data ({args.num_samples} train digits), MaskAQ\'s '
                'calibration + QAT* | ' + ' | '.join(f'{fmt(real[b])} | –' for b in args.bits)
                + ' |')
    for method in args.methods:
        cells = []
        for bits in args.bits:
            runs = results[(bits, method)]
            cells += [fmt([a for a, _ in runs]), fmt([s for _, s in runs], digits=0)]
        rows.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    text = '\n'.join([
        SECTION, '',
        f'Tiny timm ViT ({VIT_CFG["embed_dim"]}-dim, depth {VIT_CFG["depth"]}, '
        f'{VIT_CFG["num_heads"]} heads, patch 4, 32x32 input) trained on 4000 real '
        'handwritten digits of OpenCV\'s `digits.png`; accuracy on the 1000 held-out '
        'digits. Every method gets the same budget: '
        f'{args.num_samples} synthetic images, {args.synthesis_iters} synthesis '
        f'iterations per batch, {args.epochs} QAT epochs, batch {args.batch_size}; '
        f'MaskAQ also refreshes its set every {refresh} epochs (the time column shows '
        f'what that costs). Seeds: {", ".join(map(str, args.seeds))}'
        f'{" (mean ± std)" if len(args.seeds) > 1 else ""}.', '', *rows, '',
        f'Command ({platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, '
        f'{args.threads} torch thread(s); whole table {total / 60:.1f} min):', '',
        '```bash', cmd, '```', ''])
    print(text)
    if not args.no_write:
        write_section(text)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({f'{b}/{m}': v for (b, m), v in results.items()} | {'fp': fp_acc}, f)


if __name__ == '__main__':
    main()
